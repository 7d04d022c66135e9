"""Loaded models on a node: verified, warmed up, swapped atomically, the previous one kept."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    uri: str = ""  # where the bundle was loaded from (a restart loads it again)

    @property
    def version(self) -> str:
        return self.manifest["model_version"]

    @property
    def number(self) -> int:
        return int(self.manifest["model_version"])

    @property
    def features(self) -> list[str]:
        return self.manifest.get("feature_order", [])

    @property
    def takes_images(self) -> bool:
        """The bundle declares image preprocessing: requests carry images, not feature rows."""
        return "preprocessing" in self.manifest

    def warm_up(self) -> None:
        shape = [1 if d == -1 else d for d in self.manifest["inputs"][0]["shape"]]
        self.predict(np.zeros(shape, dtype=np.float32))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        spec_in, spec_out = self.manifest["inputs"][0], self.manifest["outputs"][0]
        return self.session.run([spec_out["name"]], {spec_in["name"]: rows})[0]


@dataclass(frozen=True)
class Pin:
    """What a node may serve: bundles under ``bundle_base`` (the fleet's bundle folder) of one
    scenario and registered model."""

    scenario: str
    registered_model: str
    bundle_base: str  # e.g. s3://lake/bundles/<scenario>/ or file:///.../bundles/<scenario>/

    def allows(self, uri: str) -> bool:
        base = self.bundle_base.rstrip("/") + "/"
        rest = uri[len(base):] if uri.startswith(base) else None
        return bool(rest) and all(part not in ("", ".", "..") for part in rest.rstrip("/").split("/"))


def fetch_bundle(uri: str) -> dict[str, bytes]:
    """All files of a bundle folder, local (``file://``) or on S3."""
    base, _, prefix = uri.rstrip("/").rpartition("/bundles/")
    return bundle.read(open_lake(base), f"bundles/{prefix}")


def load(uri: str, public_pem: bytes, pin: Pin) -> LoadedModel:
    """Check the URI against the pin, then fetch, verify (signature, checksums, scenario and
    model), load and warm up; raises BundleError if refused (before touching any other place)."""
    import onnxruntime as ort

    if not pin.allows(uri):
        raise bundle.BundleError(f"{uri} is outside this node's bundle folder {pin.bundle_base}")
    files = fetch_bundle(uri)
    manifest = bundle.verify(files, public_pem)
    if (manifest.get("scenario"), manifest.get("registered_model")) != (pin.scenario, pin.registered_model):
        raise bundle.BundleError(f"bundle of {manifest.get('scenario')}/{manifest.get('registered_model')}; this node "
                                 f"serves {pin.scenario}/{pin.registered_model}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(files[bundle.MODEL], options, providers=["CPUExecutionProvider"])
    model = LoadedModel(manifest, session, uri=uri)
    model.warm_up()  # before it serves
    return model


class ModelSlots:
    """``current`` serves; ``previous`` waits for an instant rollback. Readers take ``current``
    once per request, so a swap never interrupts a request in flight. ``highest`` is the highest
    version ever accepted (kept in ``state_file`` across restarts): lower ones need a rollback order.
    The state file also names the bundle serving now, so a restarted node serves it again."""

    def __init__(self, state_file: Path | None = None):
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self._lock = threading.Lock()
        self.state_file = state_file
        self.highest: int | None = None
        if state_file and state_file.exists():
            self.highest = json.loads(state_file.read_text()).get("highest")

    def _save(self) -> None:
        if self.state_file:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"highest": self.highest, "serving": self.current.uri if self.current else None}))
            tmp.replace(self.state_file)

    def _remember(self, version: int) -> None:
        self.highest = max(version, self.highest or version)
        self._save()

    def restore(self, loader) -> LoadedModel | None:
        """After a restart: serve again the bundle served before it, loaded (and so verified
        again) by ``loader``; None if nothing was serving."""
        uri = json.loads(self.state_file.read_text()).get("serving") if self.state_file and self.state_file.exists() else None
        if not uri:
            return None
        model = loader(uri)
        with self._lock:
            self.current = model
        return model

    def swap_in(self, model: LoadedModel) -> bool:
        """Serve ``model``; False (nothing changes) if it is the version already serving. A lower
        version than the highest accepted is refused with ``Downgrade``."""
        version = model.number
        with self._lock:
            if self.current is not None and self.current.version == model.version:
                return False
            if self.highest is not None and version < self.highest:
                raise Downgrade(f"version {version} is lower than version {self.highest} this node already accepted; "
                                "going back needs a signed rollback order")
            self.previous, self.current = self.current, model
            self._remember(version)
            return True

    def roll_back_to(self, target: str | None) -> LoadedModel | None:
        """Back to ``target`` (the previous model's version, or None for nothing): explicit, so
        a repeated order is a no-op, never a toggle."""
        with self._lock:
            serving = self.current.version if self.current else None
            if serving == target:
                return self.current
            if target is not None and (self.previous is None or self.previous.version != target):
                have = self.previous.version if self.previous else "none"
                raise LookupError(f"cannot roll back to version {target}: the kept previous version is {have}")
            self.current, self.previous = self.previous if target is not None else None, None
            self._save()
            return self.current


class Downgrade(ValueError):
    """A lower version than the node accepted before, without a rollback order."""


NUMBERS = (int, float)


def parse_rows(payload: dict, features: list[str], max_rows: int, numbers_only: bool = False) -> np.ndarray:
    """``{"rows": [[...], ...]}`` or ``{"rows": [{name: value}, ...]}`` -> float32 matrix. Values
    must be JSON numbers (not strings, not booleans) that stay finite as float32. ``numbers_only``:
    the caller saw no string or literal in the body, so the per-value type check is skipped."""
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InputError("rows: expected a non-empty list of feature rows")
    if len(rows) > max_rows:
        raise InputError(f"rows: {len(rows)} rows, at most {max_rows} per request")
    width = len(features)
    if all(type(row) is list and len(row) == width and (numbers_only or all(type(v) in NUMBERS for v in row))
           for row in rows):
        try:
            with np.errstate(over="ignore"):
                matrix = np.asarray(rows, dtype=np.float32)  # fast path: one conversion
        except (ValueError, TypeError):  # a value that is a list or an object: the slow path names it
            matrix = None
        if matrix is not None and matrix.shape == (len(rows), width) and np.isfinite(matrix).all():
            return matrix
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
            with np.errstate(over="ignore"):
                finite = type(value) in NUMBERS and np.isfinite(np.float32(value))
            if not finite:
                raise InputError(f"rows[{i}].{features[j]}: expected a finite number (float32), got {value!r}")
        matrix[i] = values
    return matrix
