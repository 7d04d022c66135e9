"""The compress stage as Airflow tasks see it."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cityfactory.compression.gate import CompressionGateError
from cityfactory.compression.onnx_export import ParityError
from cityfactory.governance.ledger import Artifact, Kind
from cityfactory.pipeline.compress_stage import compress_version
from cityfactory.pipeline.context import RunContext
from cityfactory.pipeline.search import examples_gold
from cityfactory.tasktypes import load_model_spec


def compress(ctx: RunContext, trained: dict, gold: dict) -> dict:
    if trained["alias"] != "challenger":
        raise AirflowSkipException(f"version {trained['version']} is no challenger: {trained['reason']}")
    scenario = ctx.scenario
    spec = load_model_spec(scenario.model_spec)
    with ctx.entry(Kind.BUNDLE_SIGNED) as entry:
        frame, _ = examples_gold(ctx, gold)  # the rows the version was judged on
        entry.inputs.append(Artifact(f"models:/{spec.registered_model}/{trained['version']}", "", None, "model_version"))
        try:
            result = compress_version(spec, trained["version"], trained["mlflow_run_id"], frame, scenario.name, ctx.lake,
                                      scenario.compression.max_quality_loss, scenario.compression.parity_tolerance)
        except (CompressionGateError, ParityError) as exc:
            raise AirflowFailException(str(exc)) from exc
        entry.outputs = [Artifact.of(s, kind="bundle") for s in result.stored]
        entry.counts = {"variants": len(result.variants), "bundle_bytes": result.chosen.size_bytes}
        entry.details.update(variants=[v.row() for v in result.variants], chosen=result.chosen.name,
                             quality_columns=list(result.chosen.quality),
                             parity_max_abs=result.parity, table=result.table, choice=result.choice,
                             refused=result.refused, facts=result.facts)
    prefix = result.stored[0].uri.rsplit("/", 1)[0]
    return {"version": trained["version"], "bundle_uri": prefix, "variant": result.chosen.name}
