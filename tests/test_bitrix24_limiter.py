"""The limiter's arithmetic: it lets a request go exactly when the portal's leaky bucket and the method's operating
budget allow it, and not a moment later. The clock is a parameter, so these run without waiting."""

from __future__ import annotations

import pytest

from connectors.bitrix24.limiter import Limiter, Limits, PROFILES, ceiling_seconds


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def _send(limiter: Limiter, n: int, methods=("crm.contact.add",)) -> None:
    for _ in range(n):
        with limiter.slot(methods):
            pass


def test_cloud_burst_goes_at_once_then_two_per_second():
    clock = Clock()
    lim = Limiter("cloud", clock=clock, sleep=clock.sleep)
    _send(lim, 49)  # 50 burst minus the one-request margin
    assert clock.slept == []
    _send(lim, 10)
    # each further request waits for half a second of drain, no more
    assert sum(clock.slept) == pytest.approx(10 / 2.0, rel=1e-6)
    assert max(clock.slept) == pytest.approx(0.5, rel=1e-6)
    assert lim.stats.requests == 59


def test_enterprise_bucket_is_bigger_and_faster():
    clock = Clock()
    lim = Limiter("enterprise", clock=clock, sleep=clock.sleep)
    _send(lim, 249)
    assert clock.slept == []
    _send(lim, 5)
    assert sum(clock.slept) == pytest.approx(1.0, rel=1e-6)


def test_idle_time_refills_the_burst():
    clock = Clock()
    lim = Limiter("cloud", clock=clock, sleep=clock.sleep)
    _send(lim, 49)
    clock.t += 25  # 25 s drain 50 requests
    _send(lim, 49)
    assert clock.slept == []


def test_a_refusal_marks_the_bucket_full():
    clock = Clock()
    lim = Limiter("cloud", clock=clock, sleep=clock.sleep)
    lim.refused_by_bucket()  # someone else filled the portal's bucket
    _send(lim, 1)
    assert clock.slept and clock.slept[0] == pytest.approx(1.0, rel=1e-6)  # (1 + margin) / rate
    assert lim.stats.refused_bucket == 1


def test_operating_budget_blocks_only_the_spent_method_until_its_reset():
    clock = Clock()
    lim = Limiter(Limits(burst=None, operating=480), clock=clock, sleep=clock.sleep)
    reset = clock.t + 300
    lim.observe("crm.contact.add", 479.0, reset)
    _send(lim, 1)  # still under: the portal lets it run (the call that crosses completes)
    assert clock.slept == []
    lim.observe("crm.contact.add", 481.0, reset)
    _send(lim, 1, methods=("crm.deal.add",))  # another method goes on
    assert clock.slept == []
    _send(lim, 1)
    # waits until the oldest minute drops (plus the second the integer timestamp may hide), then goes
    assert sum(clock.slept) == pytest.approx(301.0, abs=0.02)
    assert lim.stats.operating_waits == 1
    assert lim.stats.peak_operating["crm.contact.add"] == 481.0


def test_operating_figures_of_a_batch_bill_each_nested_method():
    clock = Clock()
    lim = Limiter("cloud", clock=clock, sleep=clock.sleep)
    lim.observe("crm.contact.add", 480.5, clock.t + 60)
    _send(lim, 1, methods={"batch": 1, "crm.contact.add": 50})
    assert sum(clock.slept) == pytest.approx(61.0, abs=0.02)


def test_a_429_without_a_reset_time_waits_a_minute():
    clock = Clock()
    lim = Limiter("cloud", clock=clock, sleep=clock.sleep)
    lim.refused_by_operating("crm.item.add", None)
    _send(lim, 1, methods=("crm.item.add",))
    assert sum(clock.slept) == pytest.approx(60.0, abs=0.02)


def test_off_never_waits():
    clock = Clock()
    lim = Limiter("off", clock=clock, sleep=clock.sleep)
    lim.observe("crm.contact.add", 10_000.0, clock.t + 600)
    _send(lim, 1000)
    assert clock.slept == []
    assert lim.max_in_flight == 4 and Limiter("cloud").max_in_flight == 1


def test_ceiling_arithmetic():
    cloud = PROFILES["cloud"]
    assert ceiling_seconds(50, cloud) == 0
    assert ceiling_seconds(250, cloud) == pytest.approx(100.0)
    assert ceiling_seconds(10, cloud, operating_total=1000.0) == pytest.approx(1200.0)


def test_the_budget_model_waits_for_as_many_minutes_as_must_drop():
    """The portal's figure falls minute by minute: the limiter waits until enough of them have dropped out."""
    clock = Clock()
    t0 = clock.t
    lim = Limiter(Limits(burst=None, operating=10.0), clock=clock, sleep=clock.sleep)
    m = "crm.item.add"
    lim.observe(m, 0.2, t0 + 600, at=t0)  # a small first minute
    clock.t = t0 + 60
    lim.observe(m, 5.0, t0 + 600, at=t0 + 60)
    clock.t = t0 + 120
    lim.observe(m, 10.5, t0 + 600, at=t0 + 120)
    _send(lim, 1, methods=(m,))
    # dropping the first minute (0.2) is not enough: the second (4.8) must go too, at t0 + 60 + 600
    assert clock.t == pytest.approx(t0 + 660, abs=0.01)


def test_a_batch_must_fit_whole():
    """Nested commands are checked one by one: a batch of n goes only if n - 1 more commands stay under."""
    clock = Clock()
    t0 = clock.t
    lim = Limiter(Limits(burst=None, operating=10.0), clock=clock, sleep=clock.sleep)
    m = "crm.contact.add"
    lim.observe(m, 5.0, t0 + 600, at=t0)
    lim.observe(m, 9.0, t0 + 600, commands=40, at=t0)  # 0.1 s per command
    _send(lim, 1, methods={"batch": 1, m: 10})  # 9 + 9 * 0.1 < 10: goes
    assert clock.slept == []
    _send(lim, 1, methods={"batch": 1, m: 11})  # 9 + 10 * 0.1 = 10: would be refused inside
    assert clock.slept
