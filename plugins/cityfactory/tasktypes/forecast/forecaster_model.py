"""Every registered version's MLflow pyfunc, as code (MLflow's "models from code"): a
``Forecaster`` whose fitted state is loaded from the version's artifact when MLflow loads it."""

from mlflow.models import set_model

from cityfactory.tasktypes.forecast.families import Forecaster

set_model(Forecaster())
