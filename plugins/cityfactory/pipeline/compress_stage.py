"""The compress stage: the ``challenger`` version -> measured variants -> a signed edge bundle."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cityfactory.compression import bundle, gate
from cityfactory.compression.variants import Variant
from cityfactory.storage.lake import Lake, StoredObject
from cityfactory.tasktypes import task_type_of
from cityfactory.tasktypes.spec import ModelSpec
from cityfactory.training import registry

log = logging.getLogger(__name__)


@dataclass
class Compressed:
    variants: list[Variant]
    chosen: Variant
    parity: float
    manifest: dict
    stored: list[StoredObject]
    table: str
    choice: str = ""
    refused: dict | None = None
    facts: dict | None = None


def _card_with_compression(run_id: str, why: str, table: str, facts: dict) -> None:
    """The run's model card, with the edge variants side by side and how they were made."""
    import mlflow

    try:
        card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    except Exception:  # noqa: BLE001 - a run without a card (made before cards existed) gets none
        return
    calibration = facts.get("calibration")
    made = (f"\n\nint8 calibration set: {len(calibration['images'])} training images "
            f"({', '.join(f'{c} {n}' for c, n in calibration['per_class'].items())}), fingerprint "
            f"`{calibration['fingerprint']}`.") if calibration else ""
    mlflow.log_text(f"{card.rstrip()}\n\n## Edge variant\n{why}.{made}\n\n```\n{table}\n```\n", "model_card.md")


def compress_version(spec: ModelSpec, version: str, mlflow_run_id: str, gold: pd.DataFrame, scenario: str,
                     lake: Lake, max_quality_loss: float, parity_tolerance: float) -> Compressed:
    """The version's variants, as its task type builds them, measured on its test rows; the
    smallest within the budget on the task type's compression metric is signed into a bundle."""
    import mlflow

    kind = task_type_of(spec)
    metric = kind.compression_metric
    better = kind.metrics[metric].greater_is_better
    registry.use_experiment(scenario)
    model = kind.load_model(f"models:/{spec.registered_model}/{version}")
    examples = kind.examples(spec, gold)
    with tempfile.TemporaryDirectory(prefix="cityfactory-compress-") as tmp:
        variants, parity = kind.compress(spec, model, examples, Path(tmp), parity_tolerance)
        text = gate.table(variants, metric, better)
        log.info("compression variants (test rows: %d):\n%s", len(examples.x_test), text)
        with mlflow.start_run(run_id=mlflow_run_id):
            mlflow.log_table(pd.DataFrame([v.row() for v in variants]), "compression/variants.json")
            mlflow.log_text(text, "compression/variants.txt")
            mlflow.log_metric("compression_parity_max_abs", parity)
            for v in variants:
                mlflow.log_metrics({f"compression_{v.name}_{k}": value for k, value in v.row().items() if k not in ("name", "path")})
            also = kind.compression_also(spec)
            refused = gate.refusals(variants, metric, max_quality_loss, better, also, kind.compression_must_be_faster)
            chosen = gate.choose(variants, metric, max_quality_loss, better, also=also,  # raises if nothing fits
                                 must_be_faster=kind.compression_must_be_faster, fallback=kind.compression_fallback)
            why = (f"{chosen.name}: the smallest variant within the budget" if chosen.name != "onnx_fp32" else
                   "onnx_fp32: no compressed variant may ship (" + "; ".join(f"{n}: {r}" for n, r in refused.items()) + ")")
            log.info("compression choice %s", why)
            facts = kind.compression_facts(spec, examples)
            if facts:
                mlflow.log_dict(facts, "compression/facts.json")
            mlflow.set_tag("compression_variant", chosen.name)
            mlflow.set_tag("compression_choice", why[:5000])
            _card_with_compression(mlflow_run_id, why, text, facts)
            onnx_bytes = Path(chosen.path).read_bytes()
            mlflow.log_artifact(chosen.path, "compression")
    bundle_facts = {
        "scenario": scenario, "registered_model": spec.registered_model, "model_version": str(version),
        "mlflow_run_id": mlflow_run_id, "task_type": spec.task_type, "family": model.family, "variant": chosen.name,
        **kind.edge_contract(spec, model),
        "test_metrics": chosen.quality,
        "compression": {"choice": why, "refused": refused, **facts},
    }
    files = bundle.build({bundle.MODEL: onnx_bytes}, bundle_facts)
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
    return Compressed(variants, chosen, parity, manifest, stored, text, why, refused, facts)
