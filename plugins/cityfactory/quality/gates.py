"""Quality gates: Great Expectations 1.x suites (``expectations/<suite>.json``) run on a dataset.

Each gate runs a Checkpoint over an ephemeral context (Suite + Validation Definition on a
DataFrame batch), stores the full validation result under the run's governance folder, and fails
with one line per failed expectation and its observed value, so nothing downstream runs.

An expectation may say in its ``meta`` what a breach does: ``"on_fail": "stop"`` (the default)
stops the run; ``"on_fail": "quarantine"`` (row-level expectations only) sets the offending rows
aside with the expectation as their reason and lets the rest go on: a stuck sensor's few hours
should not stop a year.
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


ON_FAIL = ("stop", "quarantine")


@dataclass
class GateResult:
    suite: str
    success: bool  # no expectation that stops the run failed
    checks: list[dict] = field(default_factory=list)  # expectation, column, success, observed, on_fail
    raw: dict = field(default_factory=dict)
    quarantined: dict[int, str] = field(default_factory=dict)  # frame position -> reason (first breach)

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if not c["success"] and c["on_fail"] == "stop"]


def on_fail(expectation: dict) -> str:
    return (expectation.get("meta") or {}).get("on_fail", "stop")


def is_row_level(expectation_type: str) -> bool:
    """Whether the expectation judges rows one by one (so offending rows can be set aside)."""
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        kind = get_expectation_impl(expectation_type)
    except ExpectationNotFoundError:
        return False
    return issubclass(kind, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))


def _reason(check: dict, kwargs: dict) -> str:
    bounds = {k: v for k, v in kwargs.items() if k not in ("column", "column_list", "result_format")}
    return f"quality gate: {check['expectation']}({check['column'] or 'table'}) {bounds}"


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
    from great_expectations.data_context.types.base import ProgressBarsConfig

    spec = load_suite(suite_name)
    frame = frame.reset_index(drop=True)  # GX reports offending rows by index: make it the position
    context = gx.get_context(mode="ephemeral")
    # no progress bars: a task's stderr is logged at ERROR level by Airflow's task runner
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = context.data_sources.add_pandas("lake").add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("run")
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=spec["expectations"], meta=spec.get("meta", {})))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    quarantining = any(on_fail(e) == "quarantine" for e in spec["expectations"])
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{suite_name}_gate", validation_definitions=[definition],
        result_format="COMPLETE" if quarantining else "SUMMARY"))  # COMPLETE: every offending row's index
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    [validation] = outcome.run_results.values()
    raw = validation.to_json_dict()
    checks, quarantined = [], {}
    for r, expectation in zip(raw["results"], spec["expectations"], strict=True):
        config = r["expectation_config"]
        check = {"expectation": config["type"], "column": config["kwargs"].get("column"), "success": r["success"],
                 "observed": _observed(r["result"]), "on_fail": on_fail(expectation), "quarantined": 0}
        if not r["success"] and check["on_fail"] == "quarantine":
            rows = [int(i) for i in r["result"].get("unexpected_index_list") or []]
            check["quarantined"] = len(rows)
            for row in rows:
                quarantined.setdefault(row, _reason(check, expectation["kwargs"]))
        for heavy in ("unexpected_list", "unexpected_index_list", "unexpected_index_query"):
            r["result"].pop(heavy, None)  # quarantined rows are kept in quarantine, not in the stored result
        checks.append(check)
    success = all(c["success"] or c["on_fail"] == "quarantine" for c in checks)
    return GateResult(suite_name, success, checks, raw, quarantined)


def run_gate(frame, suite_name: str, ledger: RunLedger, entry: LedgerEntry, dataset_uri: str,
             dataset_kind: str = "dataset") -> GateResult:
    """Validate, store the result in the lake, record it, and raise if the suite failed."""
    result = validate(frame, suite_name)
    key = join_key(ledger.prefix, "quality", f"{suite_name}.json")
    stored = ledger.lake.put_bytes(key, json.dumps(result.raw, indent=1, default=str).encode())
    entry.inputs.append(Artifact(dataset_uri, "", len(frame), kind=dataset_kind))
    entry.outputs.append(Artifact.of(stored, kind="validation"))
    entry.counts.update(rows=len(frame), expectations=len(result.checks), failed=len(result.failures),
                        quarantined=len(result.quarantined))
    entry.details.update(suite=suite_name, success=result.success, checks=result.checks)
    if not result.success:
        lines = [f"{c['expectation']}({c['column'] or 'table'}): observed {c['observed']}" for c in result.failures]
        raise QualityGateError(f"quality gate {suite_name} failed {len(lines)} of {len(result.checks)}: " + "; ".join(lines))
    log.info("quality gate %s passed %d expectations on %d rows (%d set aside)", suite_name, len(result.checks),
             len(frame), len(result.quarantined))
    return result
