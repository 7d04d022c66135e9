"""OpenLineage: our tasks attach what they read and wrote to the events Airflow's provider emits.

The provider's listener sends START/COMPLETE/FAIL for every task instance but sees no datasets in
a TaskFlow function. When a task records its ledger entry, we send one RUNNING event for the same
OpenLineage run (same job name and run id as the listener's), carrying the entry's inputs and
outputs; consumers such as Marquez merge a run's events. The transport is the provider's: a file
under the governance folder in the embedded default, HTTP to Marquez in docker-compose.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cityfactory.governance.lineage import FOLDED_LAYERS

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/city-ai-factory/cityfactory"


def dataset_name(artifact: dict) -> tuple[str, str]:
    """OpenLineage (namespace, name) for a ledger artifact, after the spec's naming conventions:
    ``file`` + path, ``s3://bucket`` + key, ``duckdb://<file>`` + relation, the MLflow URI, the
    node's base URL. The objects of a folded layer become one dataset: the layer's prefix."""
    uri = artifact["uri"]
    if artifact["kind"] in FOLDED_LAYERS:
        folder, depth = FOLDED_LAYERS[artifact["kind"]]
        uri = re.sub(rf"/({folder}(?:/[^/]+){{{depth}}})(/.*)?$", r"/\1", uri)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return "file", parts.path
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}", parts.path.lstrip("/")
    if parts.scheme == "duckdb":
        database, _, relation = uri.removeprefix("duckdb://").rpartition("/")
        return f"duckdb://{database}", relation
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}", f"serving/{parts.fragment or 'model'}"  # what the node serves
    if parts.scheme in ("models", "runs"):
        return "mlflow", uri
    return parts.scheme or "unknown", uri


def _datasets(artifacts: list[dict], cls, output: bool) -> list:
    from openlineage.client.facet_v2 import dataset_version_dataset as version
    from openlineage.client.facet_v2 import (
        datasource_dataset,
        output_statistics_output_dataset,
    )

    merged: dict[tuple[str, str], dict] = {}
    for a in artifacts:
        key = dataset_name(a)
        m = merged.setdefault(key, {"rows": None, "files": 0, "sha256": a["sha256"]})
        m["files"] += 1
        if a.get("rows") is not None:
            m["rows"] = (m["rows"] or 0) + a["rows"]
    datasets = []
    for (namespace, name), m in merged.items():
        facets = {"dataSource": datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=namespace)}
        if m["files"] == 1 and m["sha256"]:
            facets["version"] = version.DatasetVersionDatasetFacet(datasetVersion=m["sha256"])
        extra = {}
        if output and m["rows"] is not None:
            extra["outputFacets"] = {"outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=m["rows"], fileCount=m["files"])}
        datasets.append(cls(namespace=namespace, name=name, facets=facets, **extra))
    return datasets


def emit_task_lineage(entry: dict) -> None:
    """Send the entry's inputs and outputs for the running task instance (no-op when disabled)."""
    from airflow.providers.openlineage import conf

    if conf.is_disabled() or not (entry["inputs"] or entry["outputs"]):
        return
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.sdk import get_current_context
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )

    try:
        context = get_current_context()
    except RuntimeError:  # a library call outside a task: no OpenLineage run to attach to
        return
    ti, dag_run = context["ti"], context["dag_run"]
    run_id = OpenLineageAdapter.build_task_instance_run_id(
        dag_id=ti.dag_id, task_id=ti.task_id, try_number=ti.try_number,
        logical_date=dag_run.logical_date or dag_run.run_after, map_index=ti.map_index,
    )
    event = RunEvent(
        eventType=RunState.RUNNING, eventTime=datetime.now(UTC).isoformat(), producer=PRODUCER,
        run=Run(runId=run_id), job=Job(namespace=conf.namespace(), name=f"{ti.dag_id}.{ti.task_id}"),
        inputs=_datasets(entry["inputs"], InputDataset, output=False),
        outputs=_datasets(entry["outputs"], OutputDataset, output=True),
    )
    try:
        OpenLineageAdapter().emit(event)
    except Exception as exc:  # noqa: BLE001 - lineage must never fail the pipeline; the ledger has the facts
        log.warning("OpenLineage event for %s not sent: %s", ti.task_id, exc)
