"""A run's lineage graph, built from its ledger, and drawn as an SVG picture for the report.

Nodes are artifacts; the many objects of one layer (landed files, raw files, bronze and quarantine
partitions, the files of a bundle) fold into one node per kind with a digest over their checksums.
An edge runs from what a task read to what it wrote, labelled with the task.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape

# Layers made of many objects: one node each (and, for OpenLineage, one dataset: the lake folder
# and this many levels below it).
FOLDED_LAYERS = {"landing": ("landing", 1), "raw": ("raw", 1), "bronze": ("bronze", 1),
                 "quarantine": ("quarantine", 1), "bundle": ("bundles", 2)}
FOLDED_KINDS = tuple(FOLDED_LAYERS)

STAGE_OF_KIND = {
    "source": "ingest", "landing": "ingest", "raw": "ingest", "bronze": "ingest", "quarantine": "ingest",
    "validation": "quality", "dbt_model": "transform", "gold": "transform",
    "mlflow_run": "train", "model_version": "train", "model_alias": "train",
    "bundle": "compress", "bake_rows": "rollout", "edge_node": "rollout",
}
STAGE_COLOURS = {"ingest": "#dbeafe", "quality": "#fef3c7", "transform": "#dcfce7", "train": "#fce7f3",
                 "compress": "#ede9fe", "rollout": "#ffedd5", "other": "#f3f4f6"}


@dataclass
class Node:
    id: str
    kind: str
    label: str
    objects: int = 0
    rows: int | None = None
    checksums: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The object's sha256, or a sha256 over the sorted checksums of a folded layer."""
        known = sorted({c for c in self.checksums if c})
        if len(known) == 1 and self.objects == 1:
            return known[0]
        return hashlib.sha256("\n".join(known).encode()).hexdigest() if known else ""

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "stage": STAGE_OF_KIND.get(self.kind, "other"), "label": self.label,
                "objects": self.objects, "rows": self.rows, "sha256": self.digest}


def node_id(artifact: dict) -> str:
    return artifact["kind"] if artifact["kind"] in FOLDED_KINDS else artifact["uri"]


def _label(artifact: dict) -> str:
    if artifact.get("label"):
        return artifact["label"]
    kind, uri = artifact["kind"], artifact["uri"].rstrip("/")
    name = uri.rsplit("/", 1)[-1]
    labels = {
        "edge_node": uri.split("//", 1)[-1].replace("#model=", " v"),
        "model_version": uri.removeprefix("models:/").replace("/", " v"),
        "model_alias": "alias @" + uri.rsplit("@", 1)[-1],
        "mlflow_run": f"MLflow run {name[:12]}",
        "validation": f"GX {name.removesuffix('.json')}",
        "dbt_model": name,
        "gold": f"gold {name.removesuffix('.parquet')}",
        "bake_rows": "bake rows",
    }
    return kind if kind in FOLDED_KINDS else labels.get(kind, name)


def _edges(entry: dict) -> list[tuple[str, str]]:
    inputs = list(dict.fromkeys(node_id(a) for a in entry["inputs"]))
    if "landing" in inputs and "raw" in inputs:
        # ingestion keeps each landed file unchanged in raw/, then parses the raw files
        pairs, inputs = [("landing", "raw")], ["raw"]
    else:
        pairs = []
    for out in entry["outputs"]:
        for source in out.get("derived_from") or inputs:
            pairs.append((source, node_id(out)))
    return pairs


@dataclass
class Lineage:
    nodes: dict[str, Node]
    edges: list[dict]

    def as_dict(self) -> dict:
        return {"nodes": [n.as_dict() for n in self.nodes.values()], "edges": self.edges}


def build(entries: list[dict]) -> Lineage:
    """The graph of one run's ledger (only entries that succeeded add edges; failed ones add the
    artifacts they did write)."""
    nodes: dict[str, Node] = {}
    seen_objects: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entry in entries:
        for artifact in entry["inputs"] + entry["outputs"]:
            if artifact["kind"] == "report":  # governance's own output: about the run, not its data
                continue
            nid = node_id(artifact)
            node = nodes.setdefault(nid, Node(nid, artifact["kind"], _label(artifact)))
            whole_layer = nid in FOLDED_KINDS and not artifact["sha256"]  # a reference to the layer, no object
            if not whole_layer and artifact["uri"] not in seen_objects[nid]:
                seen_objects[nid].add(artifact["uri"])
                node.objects += 1
                node.checksums.append(artifact["sha256"])
                if artifact.get("rows") is not None:
                    node.rows = (node.rows or 0) + artifact["rows"]
        for source, target in _edges(entry):
            if source in nodes and target in nodes and source != target:
                edges[(source, target)].add(entry["task_id"])
    listed = [{"source": s, "target": t, "tasks": sorted(tasks)} for (s, t), tasks in edges.items()]
    return Lineage(nodes, listed)


def _layers(lineage: Lineage) -> list[list[str]]:
    """Longest-path layering: every edge points to a lower layer."""
    depth = {n: 0 for n in lineage.nodes}
    for _ in range(len(depth)):
        changed = False
        for e in lineage.edges:
            if depth[e["target"]] < depth[e["source"]] + 1:
                depth[e["target"]], changed = depth[e["source"]] + 1, True
        if not changed:
            break
    layers: dict[int, list[str]] = defaultdict(list)
    for nid in sorted(lineage.nodes, key=lambda n: (lineage.nodes[n].kind, n)):
        layers[depth[nid]].append(nid)
    return [layers[d] for d in sorted(layers)]


def svg(lineage: Lineage, width: int = 1040, box_h: int = 44, gap_x: int = 14, gap_y: int = 34) -> str:
    """Top-down picture of the graph: one row per layer, boxes coloured by stage, a legend on top."""
    legend_h = 28
    height = legend_h + len(_layers(lineage)) * (box_h + gap_y) + gap_y
    where: dict[str, tuple[float, float, float]] = {}  # x, y, box width
    for r, row in enumerate(_layers(lineage)):
        box_w = min(210, int((width - gap_x) / len(row) - gap_x))
        left = (width - len(row) * (box_w + gap_x) + gap_x) / 2
        for c, nid in enumerate(row):
            where[nid] = (left + c * (box_w + gap_x), legend_h + gap_y / 2 + r * (box_h + gap_y), box_w)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
              f'viewBox="0 0 {width} {height:.0f}" font-family="sans-serif" font-size="11" role="img" '
              f'aria-label="lineage graph">'),
             ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
              'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7280"/></marker></defs>')]
    for i, (stage, fill) in enumerate(STAGE_COLOURS.items()):
        if stage != "other":
            parts.append(f'<rect x="{10 + i * 110}" y="6" width="14" height="14" rx="3" fill="{fill}" stroke="#6b7280"/>'
                         f'<text x="{30 + i * 110}" y="17">{stage}</text>')
    for e in lineage.edges:
        (x1, y1, w1), (x2, y2, w2) = where[e["source"]], where[e["target"]]
        x1, y1, x2 = x1 + w1 / 2, y1 + box_h, x2 + w2 / 2
        mid = (y1 + y2) / 2
        parts.append(f'<path d="M {x1:.0f} {y1:.0f} C {x1:.0f} {mid:.0f}, {x2:.0f} {mid:.0f}, {x2:.0f} {y2:.0f}" '
                     f'fill="none" stroke="#9ca3af" stroke-width="1.2" marker-end="url(#arrow)">'
                     f'<title>{escape(", ".join(e["tasks"]))}</title></path>')
    for nid, node in lineage.nodes.items():
        x, y, box_w = where[nid]
        chars = int(box_w / 6.4)
        fill = STAGE_COLOURS.get(STAGE_OF_KIND.get(node.kind, "other"), STAGE_COLOURS["other"])
        facts = [f"{node.objects} objects" if node.objects > 1 else "",
                 f"{node.rows:,} rows" if node.rows is not None else "", node.digest[:10]]
        parts.append(f'<g><title>{escape(nid)}\nsha256 {node.digest or "n/a"}</title>'
                     f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}" stroke="#6b7280"/>'
                     f'<text x="{x + 8:.0f}" y="{y + 17:.0f}" font-weight="bold">{escape(node.label[:chars])}</text>'
                     f'<text x="{x + 8:.0f}" y="{y + 34:.0f}" fill="#374151">{escape(" · ".join(f for f in facts if f)[:chars + 6])}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)
