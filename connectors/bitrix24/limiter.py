"""Keep inside both Bitrix24 limits so that the portal never has to refuse, and wait no longer than it must.

1. The leaky bucket (one counter per portal): +1 per HTTP request (a ``batch`` is one request), drains ``rate`` per
   second, refuses (503 QUERY_LIMIT_EXCEEDED) above ``burst``. Cloud 50 / 2 per s, Enterprise 250 / 5. The limiter
   keeps its own estimate of the counter: a request is sent when the estimate plus one stays within
   ``burst - margin``; otherwise it waits exactly the time the bucket needs to drain that far. The estimate is
   conservative: a request reaches the portal after it leaves here, so the portal has drained at least as much.
2. The operating budget per method: every answer's ``time.operating`` is the seconds this method spent over the
   last ten minutes, in one-minute buckets that each live ten minutes from the first call of their minute, and
   ``operating_reset_at`` is when the oldest drops (inside a batch, each command's ``result_time`` carries its own
   method's figures and its ``start``). The portal checks the budget before each call (nested commands too): the
   call that crosses it completes, the next is refused (429, or OPERATION_TIME_LIMIT in ``result_error``). The
   limiter keeps a model of those buckets, fed by the figures: the growth of ``operating`` from one answer to the
   next is the call's cost, billed to the minute the call started in; the oldest bucket drops at
   ``operating_reset_at`` (the model is shifted to agree). A request with ``n`` commands of a method goes when the
   model's figure plus what calls in flight and ``n - 1`` of its commands will add stays under the limit;
   otherwise it waits until enough of the model's buckets have dropped, and no longer.
3. ``max_in_flight`` requests at a time (1 on cloud portals, more on self-hosted ones).

The clock and the sleep are parameters so that the arithmetic can be tested without waiting.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator


@dataclass(frozen=True)
class Limits:
    """A portal's limits. ``burst=None`` switches the bucket off, ``operating=None`` the operating budget."""

    burst: float | None = 50.0
    rate: float = 2.0  # requests drained per second
    operating: float | None = 480.0  # seconds of execution per method over the window
    window: float = 600.0  # seconds (10 one-minute buckets)
    bucket_seconds: float = 60.0
    margin: float = 1.0  # requests of the bucket kept free (clock jitter between here and the portal)
    # does an answer's `operating` already include the call it answers? (docs: the call that crosses completes,
    # so the figure after it is what the next call is checked against)
    operating_includes_call: bool = True

    def with_(self, **changes) -> "Limits":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[str, Limits] = {
    "cloud": Limits(burst=50, rate=2, operating=480),
    "enterprise": Limits(burst=250, rate=5, operating=480),
    "self_hosted": Limits(burst=None, operating=420),  # the box: no bucket by default, 420 s when the budget is on
    "off": Limits(burst=None, operating=None),
}

# operating_reset_at is a whole second (the portal truncates): the bucket drops within the second after it
RESET_SLACK = 1.0

DEFAULT_IN_FLIGHT = {"cloud": 1, "enterprise": 1, "self_hosted": 4, "off": 4}


@dataclass
class _Budget:
    operating: float = 0.0  # last figure the portal answered (seconds)
    reset_at: float | None = None  # unix time the oldest bucket drops (last answer)
    cost: float = 0.0  # a (slowly decaying) maximum of the cost per command: what a call in flight will add
    pending: int = 0  # commands of this method in flight
    buckets: list = field(default_factory=list)  # the model: [minute, first call ts, seconds], oldest first
    seen: bool = False


@dataclass
class LimiterStats:
    requests: int = 0
    bucket_waits: int = 0
    bucket_wait_seconds: float = 0.0
    operating_waits: int = 0
    operating_wait_seconds: float = 0.0
    refused_bucket: int = 0  # 503 QUERY_LIMIT_EXCEEDED answers (should stay 0)
    refused_operating: int = 0  # 429 answers (should stay 0)
    peak_operating: dict[str, float] = field(default_factory=dict)


class Limiter:
    def __init__(self, limits: Limits | str = "cloud", max_in_flight: int | None = None, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] | None = None):
        if isinstance(limits, str):
            profile = limits
            limits = PROFILES[limits]
        else:
            profile = "cloud" if limits.burst is not None else "off"
        self.limits = limits
        self.max_in_flight = max(1, max_in_flight or DEFAULT_IN_FLIGHT.get(profile, 1))
        self.clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._level = 0.0
        self._stamp = clock()
        self._in_flight = 0
        self._budgets: dict[str, _Budget] = {}
        self.stats = LimiterStats()

    # ------------------------------------------------------------------ waiting
    def _wait(self, seconds: float) -> None:
        """Wait with the lock released (the caller holds the condition)."""
        if self._sleep is not None:  # an injected clock: sleep outside the condition
            self._cond.release()
            try:
                self._sleep(seconds)
            finally:
                self._cond.acquire()
        else:
            self._cond.wait(timeout=seconds)

    def _drain(self, now: float) -> None:
        lim = self.limits
        if lim.burst is None:
            return
        elapsed = max(0.0, now - self._stamp)
        self._level = max(0.0, self._level - elapsed * lim.rate)
        self._stamp = now

    def bucket_delay(self, now: float | None = None) -> float:
        """Seconds until one more request fits the bucket (0: now)."""
        lim = self.limits
        if lim.burst is None:
            return 0.0
        now = self.clock() if now is None else now
        self._drain(now)
        room = lim.burst - lim.margin
        need = self._level + 1.0 - room
        # a millionth of a request is float noise (a unix timestamp has ~0.2 us resolution)
        return 0.0 if need <= 1e-6 else max(need / lim.rate, 1e-4)

    def _prune(self, b: _Budget, now: float) -> None:
        w = self.limits.window
        while b.buckets and b.buckets[0][1] + w <= now:
            b.buckets.pop(0)

    def operating_delay(self, methods: dict[str, int] | Iterable[str], now: float | None = None) -> float:
        """Seconds until a request running ``methods`` ({method: commands}) stays inside every budget (0: now)."""
        lim = self.limits
        if lim.operating is None:
            return 0.0
        now = self.clock() if now is None else now
        counts = dict(methods) if isinstance(methods, dict) else {m: 1 for m in methods}
        delay = 0.0
        for m, n in counts.items():
            b = self._budgets.get(m)
            if b is None:
                continue
            self._prune(b, now)
            extra = b.pending * b.cost + max(0, n - 1) * b.cost + \
                (0.0 if lim.operating_includes_call else b.cost)
            level = sum(x[2] for x in b.buckets)
            if level + extra < lim.operating:
                continue
            # the earliest moment enough buckets have dropped
            for x in b.buckets:
                level -= x[2]
                if level + extra < lim.operating:
                    delay = max(delay, x[1] + lim.window - now + 1e-3)
                    break
            else:  # even an empty budget cannot take the request at once: wait for all, then go
                last = b.buckets[-1][1] + lim.window - now + 1e-3 if b.buckets else 0.0
                delay = max(delay, last)
        return delay

    @contextmanager
    def slot(self, methods: dict[str, int] | Iterable[str]) -> Iterator[None]:
        """Hold a place for one HTTP request that runs ``methods`` ({method: commands}); blocks as long as needed."""
        counts = dict(methods) if isinstance(methods, dict) else {m: 1 for m in methods}
        with self._cond:
            while True:
                if self._in_flight >= self.max_in_flight:
                    self._cond.wait()
                    continue
                now = self.clock()
                op = self.operating_delay(counts, now)
                if op > 0:
                    self.stats.operating_waits += 1
                    self.stats.operating_wait_seconds += op
                    self._wait(op)
                    continue
                wait = self.bucket_delay(now)
                if wait > 0:
                    self.stats.bucket_waits += 1
                    self.stats.bucket_wait_seconds += wait
                    self._wait(wait)
                    continue
                break
            if self.limits.burst is not None:
                self._level += 1.0
            self._in_flight += 1
            self.stats.requests += 1
            for m, n in counts.items():
                self._budgets.setdefault(m, _Budget()).pending += n
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                for m, n in counts.items():
                    b = self._budgets.get(m)
                    if b is not None:
                        b.pending = max(0, b.pending - n)
                self._cond.notify_all()

    # ------------------------------------------------------------------ learning from answers
    def observe(self, method: str, operating: float | None, reset_at: float | None, commands: int = 1,
                at: float | None = None) -> None:
        """Record an answer's figures for ``method``: ``operating`` after the call that started at ``at``."""
        if operating is None:
            return
        lim = self.limits
        with self._cond:
            b = self._budgets.setdefault(method, _Budget())
            at = self.clock() if at is None else at
            self._prune(b, max(at, self.clock()) if at else self.clock())
            level = sum(x[2] for x in b.buckets)
            delta = float(operating) - level
            if delta > 1e-9:
                minute = int(at // lim.bucket_seconds)
                first_seen = not b.buckets and not b.seen
                if not b.buckets:
                    # what the portal counted before we knew: one bucket that drops at reset_at
                    if reset_at is not None and float(operating) > 0:
                        first = float(reset_at) + RESET_SLACK - lim.window
                        b.buckets.append([int(first // lim.bucket_seconds), first, delta])
                    else:
                        b.buckets.append([minute, at, delta])
                elif b.buckets[-1][0] == minute or b.buckets[-1][1] > at:
                    b.buckets[-1][2] += delta
                else:
                    b.buckets.append([minute, at, delta])
                if not first_seen:  # the first figure may hold calls made before this process
                    b.cost = max(b.cost * 0.98, delta / max(commands, 1))
            elif delta < -1e-9:  # the portal counts less than the model: take it from the oldest buckets
                take = -delta
                while take > 1e-12 and b.buckets:
                    x = b.buckets[0]
                    if x[2] <= take:
                        take -= x[2]
                        b.buckets.pop(0)
                    else:
                        x[2] -= take
                        take = 0.0
            if reset_at is not None and b.buckets:
                # the oldest bucket drops when the portal says (its timestamp is whole seconds: within 1 s after)
                first = float(reset_at) + RESET_SLACK - lim.window
                if abs(b.buckets[0][1] - first) > RESET_SLACK:
                    b.buckets[0][1] = first
                    for i in range(1, len(b.buckets)):  # keep the model in order
                        b.buckets[i][1] = max(b.buckets[i][1], first)
            b.operating = float(operating)
            b.seen = True
            if reset_at is not None:
                b.reset_at = float(reset_at)
            peak = self.stats.peak_operating
            peak[method] = max(peak.get(method, 0.0), b.operating)
            self._cond.notify_all()

    def refused_by_bucket(self) -> None:
        """A 503 QUERY_LIMIT_EXCEEDED: the portal's bucket is full whatever we thought."""
        with self._cond:
            self.stats.refused_bucket += 1
            if self.limits.burst is not None:
                self._drain(self.clock())
                self._level = max(self._level, self.limits.burst)

    def refused_by_operating(self, method: str, reset_at: float | None) -> None:
        """A 429 OPERATION_TIME_LIMIT for ``method``: blocked until ``reset_at`` (or a minute when not told)."""
        lim = self.limits
        with self._cond:
            self.stats.refused_operating += 1
            b = self._budgets.setdefault(method, _Budget())
            now = self.clock()
            self._prune(b, now)
            known = b.reset_at if b.reset_at is not None and b.reset_at > now else None
            until = reset_at or known or now + 60.0 - RESET_SLACK
            first = float(until) + RESET_SLACK - lim.window
            level = sum(x[2] for x in b.buckets)
            need = (lim.operating or 0.0) - level + max(b.cost, 1e-3)
            if need > 0:  # the portal holds more than the model: put the difference in the bucket that drops next
                if b.buckets:
                    b.buckets[0][2] += need
                    b.buckets[0][1] = first
                else:
                    b.buckets.append([int(first // lim.bucket_seconds), first, need])
            b.reset_at = float(until)

    def budget(self, method: str) -> tuple[float, float | None]:
        b = self._budgets.get(method)
        return (b.operating, b.reset_at) if b else (0.0, None)


def ceiling_seconds(requests: int, limits: Limits, operating_total: float = 0.0) -> float:
    """The least time ``requests`` HTTP requests need under ``limits`` (the bucket starts empty), and the operating
    budget: ``operating_total`` seconds of one method fit the window ``ceil(total / budget) - 1`` times over."""
    t = 0.0
    if limits.burst is not None and requests > limits.burst:
        t = (requests - limits.burst) / limits.rate
    if limits.operating is not None and operating_total > limits.operating:
        t = max(t, (math.ceil(operating_total / limits.operating) - 1) * limits.window)
    return t


__all__ = ["Limits", "Limiter", "LimiterStats", "PROFILES", "DEFAULT_IN_FLIGHT", "ceiling_seconds"]
