"""Every registered image classifier's MLflow pyfunc, as code (MLflow's "models from code"): an
``ImageClassifier`` whose fitted state is loaded from the version's artifact when MLflow loads it."""

from mlflow.models import set_model

from cityfactory.tasktypes.image_classification.families import ImageClassifier

set_model(ImageClassifier())
