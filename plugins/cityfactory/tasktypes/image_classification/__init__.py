"""Image classifiers: camera frames (inspection lines, power lines, smoke) -> one of a scenario's classes."""

from cityfactory.tasktypes.image_classification.task import ImageClassificationTask

__all__ = ["ImageClassificationTask"]
