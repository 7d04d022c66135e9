"""Forecasters: rows of numbers (sensor readings, counts) -> the next hour's value, per series."""

from cityfactory.tasktypes.forecast.task import ForecastTask

__all__ = ["ForecastTask"]
