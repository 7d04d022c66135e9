"""Quality gates: Great Expectations 1.x suites (``expectations/<suite>.json``) run on a dataset.

Each gate runs a Checkpoint over an ephemeral context (Suite + Validation Definition on a
DataFrame batch), stores the full validation result under the run's governance folder, and fails
with one line per failed expectation and its observed value, so nothing downstream runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cityfactory.governance.ledger import Artifact, LedgerEntry, RunLedger
from cityfactory.settings import get_settings
from cityfactory.storage.lake import join_key

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """A suite failed; the message lists each failed expectation with its observed value."""


@dataclass
class GateResult:
    suite: str
    success: bool
    checks: list[dict] = field(default_factory=list)  # expectation, column, success, observed
    raw: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if not c["success"]]


def load_suite(name: str, directory: Path | None = None) -> dict:
    path = (directory or get_settings().expectations_dir) / f"{name}.json"
    try:
        suite = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QualityGateError(f"{path}: cannot load expectation suite: {exc}") from exc
    if suite.get("name") != name:
        raise QualityGateError(f"{path}: key 'name' must be {name!r}")
    return suite


def _observed(result: dict) -> str:
    if (value := result.get("observed_value")) is not None:
        return repr(value.item() if hasattr(value, "item") else value)  # numpy scalars read as numbers
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:5]
        return f"{result['unexpected_count']} unexpected of {result.get('element_count')}, e.g. {sample}"
    return "n/a"


def validate(frame, suite_name: str) -> GateResult:
    """Run the suite on a pandas DataFrame with a Checkpoint; never raises on failed data."""
    import great_expectations as gx

    spec = load_suite(suite_name)
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("lake").add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("run")
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=spec["expectations"], meta=spec.get("meta", {})))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=f"{suite_name}_gate", validation_definitions=[definition], result_format="SUMMARY")
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    [validation] = outcome.run_results.values()
    raw = validation.to_json_dict()
    checks = [
        {
            "expectation": r["expectation_config"]["type"],
            "column": r["expectation_config"]["kwargs"].get("column"),
            "success": r["success"],
            "observed": _observed(r["result"]),
        }
        for r in raw["results"]
    ]
    return GateResult(suite_name, bool(raw["success"]), checks, raw)


def run_gate(frame, suite_name: str, ledger: RunLedger, entry: LedgerEntry, dataset_uri: str,
             dataset_kind: str = "dataset") -> GateResult:
    """Validate, store the result in the lake, record it, and raise if the suite failed."""
    result = validate(frame, suite_name)
    key = join_key(ledger.prefix, "quality", f"{suite_name}.json")
    stored = ledger.lake.put_bytes(key, json.dumps(result.raw, indent=1, default=str).encode())
    entry.inputs.append(Artifact(dataset_uri, "", len(frame), kind=dataset_kind))
    entry.outputs.append(Artifact.of(stored, kind="validation"))
    entry.counts.update(rows=len(frame), expectations=len(result.checks), failed=len(result.failures))
    entry.details.update(suite=suite_name, success=result.success, checks=result.checks)
    if not result.success:
        lines = [f"{c['expectation']}({c['column'] or 'table'}): observed {c['observed']}" for c in result.failures]
        raise QualityGateError(f"quality gate {suite_name} failed {len(lines)} of {len(result.checks)}: " + "; ".join(lines))
    log.info("quality gate %s passed %d expectations on %d rows", suite_name, len(result.checks), len(frame))
    return result
