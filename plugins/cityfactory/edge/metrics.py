"""Prometheus text exposition for a node: requests, errors, latency histogram, model version."""

from __future__ import annotations

import bisect
import threading
from collections import Counter

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _label(value: str) -> str:
    """A label value escaped as the Prometheus text format wants (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class NodeMetrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # by HTTP status
        self.rows = 0
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.other: Counter = Counter()  # (path, status) of every other endpoint
        self.unlogged = 0  # answered rows the prediction log could not keep (a disk error)
        self.log_dropped = 0  # answered rows not logged because the log was full

    def observe_other(self, path: str, status: int) -> None:
        with self._lock:
            self.other[(path, status)] += 1

    def observe(self, status: int, seconds: float, rows: int = 0) -> None:
        with self._lock:
            self.requests[status] += 1
            self.rows += rows
            self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def render(self, node_id: str, version: str | None) -> str:
        node_id, version = _label(node_id), _label(version or "none")
        with self._lock:
            lines = ["# HELP edge_requests_total Prediction requests by HTTP status.", "# TYPE edge_requests_total counter"]
            lines += [f'edge_requests_total{{node="{node_id}",status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            errors = sum(n for s, n in self.requests.items() if s >= 400)
            lines += ["# TYPE edge_errors_total counter", f'edge_errors_total{{node="{node_id}"}} {errors}',
                      "# TYPE edge_predicted_rows_total counter", f'edge_predicted_rows_total{{node="{node_id}"}} {self.rows}',
                      "# HELP edge_unlogged_rows_total Answered rows the prediction log could not keep.",
                      "# TYPE edge_unlogged_rows_total counter", f'edge_unlogged_rows_total{{node="{node_id}"}} {self.unlogged}',
                      "# HELP edge_log_dropped_rows_total Answered rows not logged: the log held its maximum, uncollected.",
                      "# TYPE edge_log_dropped_rows_total counter",
                      f'edge_log_dropped_rows_total{{node="{node_id}"}} {self.log_dropped}',
                      "# HELP edge_latency_seconds Prediction latency.", "# TYPE edge_latency_seconds histogram"]
            cumulative = 0
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.buckets):
                cumulative += count
                lines.append(f'edge_latency_seconds_bucket{{node="{node_id}",le="{bound}"}} {cumulative}')
            lines += [f'edge_latency_seconds_sum{{node="{node_id}"}} {self.latency_sum:.6f}',
                      f'edge_latency_seconds_count{{node="{node_id}"}} {cumulative}',
                      "# TYPE edge_model_info gauge",
                      f'edge_model_info{{node="{node_id}",version="{version}"}} 1',
                      "# HELP edge_http_responses_total Responses of the other endpoints by path and status.",
                      "# TYPE edge_http_responses_total counter"]
            lines += [f'edge_http_responses_total{{node="{node_id}",path="{_label(p)}",status="{s}"}} {n}'
                      for (p, s), n in sorted(self.other.items())]
            return "\n".join(lines) + "\n"
