"""Token buckets per name (an app, a client address), for rate limits with a ``Retry-After``.

Written here rather than taken from a library: the candidates (``limits``, ``pyrate-limiter``,
``slowapi`` on top of ``limits``) keep in-process state just like this unless they are given
a Redis, and bring a dependency, a background expiry thread and per-hit locking for what is
twenty lines of arithmetic. These buckets run on the event loop only (one thread), so they
need no lock, and they say exactly how long to wait, which is the ``Retry-After`` a refused
client gets. Memory is bounded: past ``max_names`` the least recently seen name is forgotten
(its next request starts with a full bucket).

Limits are per server process: with ``--workers N`` a client may get up to N times the rate
(connections are spread over the workers). A global limit belongs to the load balancer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_NAMES = 100_000


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``, per name; a rate of 0 never refuses."""

    def __init__(self, rate: float, burst: float, *, max_names: int = DEFAULT_MAX_NAMES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_names = max_names
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        """name -> [tokens, time of that count]."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, name: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens of ``name``'s bucket: 0.0 if allowed, else seconds until it would be."""
        if self.rate == 0:
            return 0.0
        bucket = self._bucket(name)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        return (cost - bucket[0]) / self.rate

    def wait(self, name: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0.0 now), spending nothing."""
        if self.rate == 0:
            return 0.0
        tokens = self._bucket(name)[0]
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def _bucket(self, name: str) -> list[float]:
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = [self.burst, now]
            if len(self._buckets) > self.max_names:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(name)
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        return bucket
