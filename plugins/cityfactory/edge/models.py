"""Loaded models on a node: verified, warmed up, swapped atomically, the previous one kept."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from cityfactory.compression import bundle
from cityfactory.storage.lake import open_lake

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A request that does not fit the model's input spec; the message names the field."""


@dataclass
class LoadedModel:
    manifest: dict
    session: object
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.manifest["model_version"]

    @property
    def features(self) -> list[str]:
        return self.manifest["feature_order"]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        spec_in, spec_out = self.manifest["inputs"][0], self.manifest["outputs"][0]
        return self.session.run([spec_out["name"]], {spec_in["name"]: rows})[0]


def fetch_bundle(uri: str) -> dict[str, bytes]:
    """All files of a bundle folder, local (``file://`` or a path) or on S3."""
    if "://" not in uri:
        uri = "file://" + uri
    base, _, prefix = uri.rstrip("/").rpartition("/bundles/")
    return bundle.read(open_lake(base), f"bundles/{prefix}")


def load(uri: str, public_pem: bytes) -> LoadedModel:
    """Fetch, verify (signature and checksums), load and warm up; raises BundleError if refused."""
    import onnxruntime as ort

    files = fetch_bundle(uri)
    manifest = bundle.verify(files, public_pem)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(files[bundle.MODEL], options, providers=["CPUExecutionProvider"])
    model = LoadedModel(manifest, session)
    model.predict(np.zeros((1, len(model.features)), dtype=np.float32))  # warm-up before it serves
    return model


class ModelSlots:
    """``current`` serves; ``previous`` waits for an instant rollback. Readers take ``current``
    once per request, so a swap never interrupts a request in flight."""

    def __init__(self):
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self._lock = threading.Lock()

    def swap_in(self, model: LoadedModel) -> None:
        with self._lock:
            self.previous, self.current = self.current, model

    def roll_back(self) -> LoadedModel | None:
        """Back to the previous model; with none (a first deploy), back to serving nothing."""
        with self._lock:
            if self.current is None:
                raise LookupError("no model to roll back from")
            self.current, self.previous = self.previous, self.current
            return self.current


def parse_rows(payload: dict, features: list[str]) -> np.ndarray:
    """``{"rows": [[...], ...]}`` or ``{"rows": [{name: value}, ...]}`` -> float32 matrix."""
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InputError("rows: expected a non-empty list of feature rows")
    if isinstance(rows[0], list):  # fast path: a well-formed numeric matrix converts in one call
        try:
            matrix = np.asarray(rows, dtype=np.float32)
            if matrix.shape == (len(rows), len(features)) and np.isfinite(matrix).all() and \
                    not any(isinstance(v, bool) for v in rows[0]):
                return matrix
        except (TypeError, ValueError):
            pass  # the row-by-row check below names the offending field
    matrix = np.empty((len(rows), len(features)), dtype=np.float32)
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            missing = [f for f in features if f not in row]
            if missing:
                raise InputError(f"rows[{i}].{missing[0]}: missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            values = [row[f] for f in features]
        elif isinstance(row, list):
            if len(row) != len(features):
                raise InputError(f"rows[{i}]: expected {len(features)} values, got {len(row)}")
            values = row
        else:
            raise InputError(f"rows[{i}]: expected a list or an object")
        for j, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise InputError(f"rows[{i}].{features[j]}: expected a finite number, got {value!r}")
        matrix[i] = values
    return matrix
