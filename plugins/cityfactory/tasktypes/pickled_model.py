"""A fitted model as an MLflow pyfunc logged as code (MLflow's "models from code"): the class's
module file is the model's code, its fitted state a pickled artifact, so MLflow pickles no code.
Every kind's model class subclasses this and names its code file and state artifact."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import ClassVar

import mlflow.pyfunc
import numpy as np


class PickledStateModel(mlflow.pyfunc.PythonModel):
    code_file: ClassVar[str]  # beside the subclass's module: calls ``set_model`` with an empty instance
    state_file: ClassVar[str]
    code_dir: ClassVar[Path]

    def log_model(self, **kwargs):
        """``mlflow.pyfunc.log_model`` of this model; returns its ModelInfo."""
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / self.state_file
            state.write_bytes(pickle.dumps(vars(self)))
            return mlflow.pyfunc.log_model(python_model=str(self.code_dir / self.code_file),
                                           artifacts={self.state_file: str(state)}, **kwargs)

    def load_context(self, context) -> None:
        vars(self).update(pickle.loads(Path(context.artifacts[self.state_file]).read_bytes()))

    def predict(self, context, model_input: np.ndarray, params=None):  # the hint: MLflow passes arrays as they come
        return self.predict_array(np.asarray(model_input, dtype=np.float32))

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError
