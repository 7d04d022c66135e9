"""The compress stage: the ``challenger`` version -> measured variants -> a signed edge bundle."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cityfactory.compression import bundle, gate, trees
from cityfactory.compression.onnx_export import INPUT, OUTPUT
from cityfactory.compression.variants import Variant, build_and_measure
from cityfactory.storage.lake import Lake, StoredObject
from cityfactory.training import data, registry
from cityfactory.training.network import ResidualMLP
from cityfactory.training.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class Compressed:
    variants: list[Variant]
    chosen: Variant
    parity: float
    manifest: dict
    stored: list[StoredObject]
    table: str


def load_forecaster(spec: ModelSpec, version: str):
    """The registered version as our ``families.Forecaster`` (any family)."""
    import mlflow

    return mlflow.pyfunc.load_model(f"models:/{spec.registered_model}/{version}").unwrap_python_model()


def load_torch_model(spec: ModelSpec, version: str):
    """The registered version's network: a network family's, or a version logged as a plain
    PyTorch model (the ``pytorch`` flavour)."""
    import mlflow

    uri = f"models:/{spec.registered_model}/{version}"
    if "pytorch" not in mlflow.pyfunc.load_model(uri).metadata.flavors:
        return load_forecaster(spec, version).model.eval()
    state = mlflow.pytorch.load_model(uri).state_dict()  # an exported graph: its weights, in our module
    arch, names = spec.architecture, spec.data.feature_names
    model = ResidualMLP(len(names), arch.hidden, names.index(arch.residual_of), arch.output_scale,
                        state["mean"].numpy(), state["std"].numpy())
    model.load_state_dict(state)
    return model.eval()


def compress_version(spec: ModelSpec, version: str, mlflow_run_id: str, gold: pd.DataFrame, scenario: str,
                     lake: Lake, max_mae_increase: float, parity_tolerance: float) -> Compressed:
    import mlflow

    registry.use_experiment(scenario)
    forecaster = load_forecaster(spec, version)
    parts = data.split_by_time(gold, spec.data, spec.split)
    x_train, x_test = data.features(parts.train, spec.data), data.features(parts.test, spec.data)
    y_train, y_test = (p[spec.data.target].to_numpy(dtype=float) for p in (parts.train, parts.test))
    with tempfile.TemporaryDirectory(prefix="cityfactory-compress-") as tmp:
        if forecaster.family == "lightgbm":
            variants, parity = trees.build_and_measure(forecaster, len(spec.data.feature_names), x_test, y_test,
                                                       Path(tmp), parity_tolerance)
        else:
            variants, parity = build_and_measure(forecaster.model, x_train, y_train, x_test, y_test, Path(tmp),
                                                 parity_tolerance, spec.architecture.output_scale)
        text = gate.table(variants)
        log.info("compression variants (test rows: %d):\n%s", len(x_test), text)
        with mlflow.start_run(run_id=mlflow_run_id):
            mlflow.log_table(pd.DataFrame([v.row() for v in variants]), "compression/variants.json")
            mlflow.log_text(text, "compression/variants.txt")
            mlflow.log_metric("compression_parity_max_abs", parity)
            for v in variants:
                mlflow.log_metrics({f"compression_{v.name}_{k}": getattr(v, k) for k in
                                    ("size_bytes", "mae", "rmse", "b1_median_ms", "b1_p95_ms", "b256_median_ms", "b256_p95_ms")})
            chosen = gate.choose(variants, max_mae_increase)  # raises with the table if nothing fits
            mlflow.set_tag("compression_variant", chosen.name)
            onnx_bytes = Path(chosen.path).read_bytes()
            mlflow.log_artifact(chosen.path, "compression")
    scaling = ({"applied_inside_model": True, "mean": forecaster.model.mean.numpy().tolist(),
                "std": forecaster.model.std.numpy().tolist()} if forecaster.family != "lightgbm"
               else {"applied_inside_model": True, "none_needed": "trees split on raw values"})
    facts = {
        "scenario": scenario, "registered_model": spec.registered_model, "model_version": str(version),
        "mlflow_run_id": mlflow_run_id, "family": forecaster.family, "variant": chosen.name,
        "inputs": [{"name": INPUT, "shape": [-1, len(spec.data.feature_names)], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT, "shape": [-1], "dtype": "float32", "target": spec.data.target,
                     "label": spec.data.target_label, "unit": spec.data.unit}],
        "feature_order": spec.data.feature_names,
        "scaling": scaling,
        "test_metrics": {"mae": chosen.mae, "rmse": chosen.rmse},
    }
    files = bundle.build({bundle.MODEL: onnx_bytes}, facts)
    stored = bundle.write(lake, scenario, version, files)
    manifest = json.loads(files[bundle.MANIFEST])
    client = mlflow.MlflowClient()
    fp32 = next(v for v in variants if v.name == "onnx_fp32")
    for key, value in {
        "compression_variant": chosen.name, "compression_ratio": f"{fp32.size_bytes / chosen.size_bytes:.2f}",
        "bundle_uri": lake.uri_for(bundle.bundle_prefix(scenario, version)),
        "bundle_manifest_sha256": next(s.sha256 for s in stored if s.uri.endswith(bundle.MANIFEST)),
    }.items():
        client.set_model_version_tag(spec.registered_model, str(version), key, value)
    return Compressed(variants, chosen, parity, manifest, stored, text)
