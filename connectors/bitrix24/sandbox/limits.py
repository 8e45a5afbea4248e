"""The two limits of a Bitrix24 portal (reference section 2).

* Leaky bucket: one counter per portal and source IP; +1 per HTTP request (a ``batch`` is one request), draining
  ``rate`` per second; a request that would take it above ``capacity`` is refused with 503 QUERY_LIMIT_EXCEEDED
  before anything runs. Refused requests are not counted (open question 8: we chose the kinder reading).
* Operating budget: execution seconds of one method for one credential (webhook or OAuth application) over 10
  one-minute buckets; a bucket lives 10 minutes from the first call of its minute, and ``operating_reset_at`` is when
  the oldest one drops. Checked before each call: the call that crosses the limit completes, the next call of that
  method gets 429 OPERATION_TIME_LIMIT; other methods and credentials go on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitsConfig:
    """A plan: the bucket (capacity, drain per second) and the operating limit in seconds (None = off)."""

    name: str
    bucket_capacity: float | None
    bucket_rate: float
    operating_limit: float | None
    window: float = 600.0
    bucket_seconds: float = 60.0


PRESETS = {
    # cloud, every plan but Enterprise: 50 burst, 2 per s; operating 480 s (the docs' example)
    "cloud": LimitsConfig("cloud", 50, 2.0, 480.0),
    # cloud Enterprise: 250 burst, 5 per s; the same operating budget
    "enterprise": LimitsConfig("enterprise", 250, 5.0, 480.0),
    # no limits at all (a self-hosted portal with the operating limit off, minus its bucket)
    "off": LimitsConfig("off", None, 0.0, None),
}


def limits_config(limits: str | LimitsConfig, operating_limit: float | None | bool = False) -> LimitsConfig:
    """The named preset (cloud, enterprise, off), with the operating limit optionally replaced
    (``operating_limit=None`` turns it off; False keeps the preset's)."""
    if isinstance(limits, LimitsConfig):
        cfg = limits
    else:
        try:
            cfg = PRESETS[limits]
        except KeyError:
            raise ValueError(f"unknown limits {limits!r}: use one of {', '.join(PRESETS)}") from None
    if operating_limit is not False:
        cfg = LimitsConfig(cfg.name, cfg.bucket_capacity, cfg.bucket_rate, operating_limit, cfg.window,
                           cfg.bucket_seconds)
    return cfg


class LeakyBucket:
    """One bucket per key (the client's IP: every client of one sandbox is one portal)."""

    def __init__(self, capacity: float | None, rate: float, clock=time.time):
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        self._level: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> bool:
        """Count one request; False (and not counted) when the bucket is full."""
        if self.capacity is None:
            return True
        now = self.clock()
        with self._lock:
            level, last = self._level.get(key, (0.0, now))
            level = max(0.0, level - (now - last) * self.rate)
            if level + 1 > self.capacity + 1e-9:
                self._level[key] = (level, now)
                return False
            self._level[key] = (level + 1, now)
            return True

    def level(self, key: str) -> float:
        if self.capacity is None:
            return 0.0
        now = self.clock()
        with self._lock:
            level, last = self._level.get(key, (0.0, now))
            return max(0.0, level - (now - last) * self.rate)


class OperatingBudget:
    """Per (credential, method): deque of [minute, first call ts, seconds]."""

    def __init__(self, limit: float | None, window: float = 600.0, bucket_seconds: float = 60.0, clock=time.time):
        self.limit = limit
        self.window = window
        self.bucket_seconds = bucket_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], deque] = {}

    @property
    def enabled(self) -> bool:
        return self.limit is not None

    def _prune(self, q: deque, now: float) -> None:
        while q and q[0][1] + self.window <= now:
            q.popleft()

    def _state(self, q: deque, now: float) -> tuple[float, int]:
        operating = sum(b[2] for b in q)
        reset_at = int(q[0][1] + self.window) if q else int(now + self.window)
        return operating, reset_at

    def status(self, key: tuple[str, str]) -> tuple[float, int]:
        """(operating seconds, operating_reset_at) of a key now."""
        now = self.clock()
        with self._lock:
            q = self._buckets.get(key)
            if q is None:
                return 0.0, int(now + self.window)
            self._prune(q, now)
            return self._state(q, now)

    def allowed(self, key: tuple[str, str]) -> bool:
        """Whether a call may start: the budget is not used up (the call that crosses it completed earlier)."""
        if self.limit is None:
            return True
        operating, _ = self.status(key)
        return operating < self.limit

    def bill(self, key: tuple[str, str], seconds: float, at: float | None = None) -> tuple[float, int]:
        """Add a call's execution seconds (to the bucket of the minute it started in); the new state."""
        now = self.clock() if at is None else at
        minute = int(now // self.bucket_seconds)
        with self._lock:
            q = self._buckets.setdefault(key, deque())
            self._prune(q, now)
            if q and q[-1][0] == minute:
                q[-1][2] += seconds
            else:
                q.append([minute, now, seconds])
            return self._state(q, now)
