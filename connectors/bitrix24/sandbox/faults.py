"""Fault injection: ``"503=0.1,500=0.02,drop=0.01,slow=0.05:2.0,html=0.01,cmd_error=0.01,seed=7"``.

Each request draws one number from a seeded generator and gets at most one request-level fault (the rates of
those kinds add up to at most 1), so the counts over N requests are binomial with the configured rates. Kinds:

=============  =====================================================================================================
``503``        503 QUERY_LIMIT_EXCEEDED **before** anything runs (as the real bucket answers): retrying is safe.
``drop_before`` the connection is closed without an answer, **before** anything runs.
``302``        a same-domain ``302 Found`` to an HTML page (an expired licence: the portal is unavailable), **before**
               anything runs.
``500``        the method **runs**, then the answer is 500 INTERNAL_SERVER_ERROR: the outcome is unknown to the client.
``drop``       the method **runs**, then the connection is closed without an answer (a crash, a lost connection).
``html``       the method **runs**, then the answer is an nginx ``502 Bad Gateway`` HTML page (text/html).
``slow=R:S``   the method runs and the answer comes S seconds late (a client timeout makes the outcome unknown).
``cmd_error``  per command inside a ``batch`` (its own draw per command): the command does **not** run and gets
               ``{"error": "ERROR_CORE", "error_description": "..."}`` in ``result_error``; the others run.
``seed=N``     the generator's seed (default 0): the same seed and the same request sequence give the same faults.
=============  =====================================================================================================
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

REQUEST_KINDS = ("503", "drop_before", "302", "500", "drop", "html", "slow")
BEFORE = frozenset({"503", "drop_before", "302"})
KINDS = REQUEST_KINDS + ("cmd_error",)

CMD_ERROR = ("ERROR_CORE", "Sandbox fault injection: the command failed and did not run")


@dataclass
class FaultSpec:
    rates: dict[str, float] = field(default_factory=dict)
    slow_seconds: float = 2.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return any(r > 0 for r in self.rates.values())

    def describe(self) -> str:
        parts = [f"{k}={v:g}" + (f":{self.slow_seconds:g}" if k == "slow" else "") for k, v in self.rates.items()]
        return ",".join(parts + [f"seed={self.seed}"])


def parse_faults(spec: str | None, seed: int | None = None) -> FaultSpec:
    """Parse a fault spec; ValueError names the bad part."""
    out = FaultSpec()
    if spec:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep:
                raise ValueError(f"fault {part!r}: write KIND=RATE (kinds: {', '.join(KINDS)}, seed)")
            if name == "seed":
                try:
                    out.seed = int(value)
                except ValueError:
                    raise ValueError(f"fault seed {value!r} is not an integer") from None
                continue
            if name not in KINDS:
                raise ValueError(f"unknown fault {name!r}: use one of {', '.join(KINDS)}")
            rate_text, _, arg = value.partition(":")
            try:
                rate = float(rate_text)
            except ValueError:
                raise ValueError(f"fault {name}: rate {rate_text!r} is not a number") from None
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {name}: rate {rate} is not between 0 and 1")
            if arg:
                if name != "slow":
                    raise ValueError(f"fault {name} takes no argument (only slow=RATE:SECONDS)")
                try:
                    out.slow_seconds = float(arg)
                except ValueError:
                    raise ValueError(f"fault slow: seconds {arg!r} is not a number") from None
            out.rates[name] = rate
    total = sum(r for k, r in out.rates.items() if k in REQUEST_KINDS)
    if total > 1.0 + 1e-9:
        raise ValueError(f"the request-level fault rates add up to {total:g}, more than 1")
    if seed is not None:
        out.seed = seed
    return out


class FaultInjector:
    def __init__(self, spec: FaultSpec):
        self.spec = spec
        self._rng = random.Random(spec.seed)
        self._lock = threading.Lock()

    def request_fault(self) -> str | None:
        """The request-level fault of the next request, or None."""
        rates = self.spec.rates
        if not any(rates.get(k, 0) > 0 for k in REQUEST_KINDS):
            return None
        with self._lock:
            u = self._rng.random()
        acc = 0.0
        for kind in REQUEST_KINDS:
            acc += rates.get(kind, 0.0)
            if u < acc:
                return kind
        return None

    def command_fault(self) -> bool:
        rate = self.spec.rates.get("cmd_error", 0.0)
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate
