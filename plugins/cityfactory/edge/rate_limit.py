"""Per-client rate limiting at the node: a token bucket per client address.

Each client may send ``burst`` requests at once and ``per_second`` on average; beyond that it is
answered 429 with ``Retry-After`` (and counted), while other clients are served as before. The
buckets of the least recently seen clients are dropped past ``max_clients``, so a flood of
spoofed-looking addresses cannot grow the node's memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_second: float, burst: int, max_clients: int = 10_000, clock=time.monotonic):
        self.per_second, self.burst, self.max_clients, self.clock = per_second, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        """0 if ``client`` may send this request now (and it is counted); otherwise how long until it may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            allowed = tokens >= 1
            self._buckets[client] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.per_second

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
