"""The sandbox's limits and faults: the leaky bucket (503 before anything runs), the per-method operating budget
(429 after the call that crosses it), batch billing, and injected faults at their configured rates."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox
from connectors.bitrix24.sandbox.faults import parse_faults


@pytest.fixture
def web():
    with httpx.Client(timeout=10) as c:
        yield c


def test_the_leaky_bucket_lets_a_burst_of_50_through_then_refuses_with_503_before_running(web):
    with start_sandbox(limits="cloud") as sb:
        t0 = time.monotonic()
        codes = [web.post(sb.url + "user.current").status_code for _ in range(60)]
        elapsed = time.monotonic() - t0
        ok = codes.count(200)
        # 50 at once, plus what drained (2 per second) while we were sending
        assert 50 <= ok <= 50 + math.ceil(2 * elapsed) + 1
        assert codes[:50] == [200] * 50 and codes.count(503) == 60 - ok
        r = web.post(sb.url + "crm.contact.add", json={"fields": {"NAME": "refused"}})
        assert r.status_code == 503
        assert r.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        assert sb.stats.http_503 == 60 - ok + 1 and sb.stats.bucket_rejections == sb.stats.http_503
        time.sleep(0.6)  # drains 1.2 requests
        r = web.post(sb.url + "crm.contact.list", json={})
        assert r.status_code == 200 and r.json()["total"] == 0  # the refused add never ran


def test_a_batch_is_one_request_for_the_bucket(web):
    with start_sandbox(limits="cloud") as sb:
        t0 = time.monotonic()
        for _ in range(49):
            assert web.post(sb.url + "user.current").status_code == 200
        cmd = {f"c{i}": f"crm.contact.add?fields[NAME]=B{i}" for i in range(50)}
        r = web.post(sb.url + "batch", json={"cmd": cmd})  # 50 commands, one request: it fits
        assert r.status_code == 200 and len(r.json()["result"]["result"]) == 50
        more = 0
        while web.post(sb.url + "user.current").status_code == 200:
            more += 1
        assert more <= math.ceil(2 * (time.monotonic() - t0)) + 1  # only what drained meanwhile


def test_the_operating_budget_refuses_a_method_with_429_after_the_call_that_crossed_it(web):
    # every command costs 120 simulated seconds (billed, not slept): the budget of 480 s is crossed by the 4th call
    with start_sandbox(limits="cloud", op_cost_ms=120_000, op_sleep=False) as sb:
        seen = []
        for i in range(4):
            r = web.post(sb.url + "crm.contact.add", json={"fields": {"NAME": f"N{i}"}})
            assert r.status_code == 200
            t = r.json()["time"]
            seen.append(t["operating"])
            assert isinstance(t["operating_reset_at"], int) and t["start"] < t["operating_reset_at"] <= t["start"] + 601
        assert [round(x) for x in seen] == [120, 240, 360, 480] and seen[-1] > 480
        r = web.post(sb.url + "crm.contact.add", json={"fields": {"NAME": "blocked"}})
        assert r.status_code == 429
        assert r.json() == {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation "
                                                                                 "time limit."}
        # other methods go on; the blocked call did not run
        r = web.post(sb.url + "crm.contact.list", json={})
        assert r.status_code == 200 and r.json()["total"] == 4
        # other credentials go on too: an OAuth application has its own budget
        tok = sb.issue_token()
        assert web.post(sb.oauth_base + "crm.contact.add", json={"auth": tok["access_token"],
                                                                 "fields": {"NAME": "app"}}).status_code == 200
        assert sb.stats.http_429 == 1


def test_the_simulated_cost_is_real_time_by_default(web):
    with start_sandbox(limits="cloud", op_cost_ms=30, operating_limit=0.1) as sb:
        operating, durations = [], []
        while True:
            r = web.post(sb.url + "user.current")
            if r.status_code != 200:
                break
            operating.append(r.json()["time"]["operating"])
            durations.append(r.json()["time"]["duration"])
        assert r.status_code == 429
        # each call cost at least its 30 ms; the one that crossed 0.1 s completed, the next was refused
        assert min(durations) >= 0.03 and len(operating) >= 2
        assert operating[-1] >= 0.1 > operating[-2]
        assert all(b - a >= 0.03 for a, b in zip(operating, operating[1:]))


def test_nested_commands_bill_their_own_methods_and_the_outer_batch_shows_zero(web):
    with start_sandbox(limits="cloud", op_cost_ms=120_000, op_sleep=False) as sb:
        cmd = {f"a{i}": f"crm.contact.add?fields[NAME]=N{i}" for i in range(5)}
        cmd["u"] = "user.current"
        out = web.post(sb.url + "batch", json={"cmd": cmd}).json()
        assert out["time"]["operating"] == 0
        r = out["result"]
        assert list(r["result"]) == ["a0", "a1", "a2", "a3", "u"]
        assert r["result_error"] == {"a4": {"error": "OPERATION_TIME_LIMIT",
                                            "error_description": "Method is blocked due to operation time limit."}}
        ops = [r["result_time"][k]["operating"] for k in ("a0", "a1", "a2", "a3")]
        assert [round(x) for x in ops] == [120, 240, 360, 480]
        assert round(r["result_time"]["u"]["operating"]) == 120  # user.current has its own budget
        assert web.post(sb.url + "crm.contact.add", json={"fields": {"NAME": "x"}}).status_code == 429


def test_batch_billing_can_bill_the_whole_batch_to_batch(web):
    with start_sandbox(limits="cloud", op_cost_ms=100_000, op_sleep=False, batch_billing="batch") as sb:
        cmd = {f"a{i}": f"crm.contact.add?fields[NAME]=N{i}" for i in range(5)}
        out = web.post(sb.url + "batch", json={"cmd": cmd}).json()
        times = out["result"]["result_time"]
        assert len({t["operating"] for t in times.values()}) == 1  # one cumulative figure
        assert round(out["time"]["operating"]) == 500
        assert web.post(sb.url + "batch", json={"cmd": cmd}).status_code == 429
        assert web.post(sb.url + "crm.contact.add", json={"fields": {"NAME": "x"}}).status_code == 200


def test_limits_off_answer_without_operating_fields(web):
    with start_sandbox(limits="off", op_cost_ms=1000, op_sleep=False) as sb:
        for _ in range(80):
            r = web.post(sb.url + "user.current")
            assert r.status_code == 200
        assert "operating" not in r.json()["time"]


def _within(count: int, n: int, rate: float, sigmas: float = 4.5) -> bool:
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(count - n * rate) <= sigmas * sd + 1


def _outcome(web, url, key) -> str:
    try:
        r = web.post(url + "crm.contact.add", json={"fields": {"NAME": key, "ORIGINATOR_ID": "t", "ORIGIN_ID": key}})
    except httpx.RemoteProtocolError:
        return "drop"
    if r.status_code == 302:  # a same-domain redirect to an HTML page: the portal is unavailable
        assert r.headers["location"].startswith(url.split("/rest/")[0]) and b"<html>" in r.content
        return "302"
    if r.headers["content-type"].startswith("text/html"):
        assert r.status_code == 502 and b"<html>" in r.content
        return "html"
    if r.status_code == 503:
        assert r.json()["error"] == "QUERY_LIMIT_EXCEEDED"
        return "503"
    if r.status_code == 500:
        assert r.json()["error"] == "INTERNAL_SERVER_ERROR"
        return "500"
    assert r.status_code == 200
    return "ok"


def test_faults_come_at_their_rates_and_503_never_runs_while_500_drop_html_did_run(web):
    spec = "503=0.1,302=0.03,500=0.05,drop=0.05,html=0.05,slow=0.05:0.01,seed=11"
    n = 800
    with start_sandbox(limits="off", faults=spec) as sb:
        outcomes = {f"k{i}": _outcome(web, sb.url, f"k{i}") for i in range(n)}
        counts = {k: list(outcomes.values()).count(k) for k in ("503", "302", "500", "drop", "html", "ok")}
        for kind, rate in (("503", 0.1), ("302", 0.03), ("500", 0.05), ("drop", 0.05), ("html", 0.05)):
            assert _within(counts[kind], n, rate), (kind, counts)
            assert sb.stats.faults[kind] == counts[kind]
        assert _within(sb.stats.faults["slow"], n, 0.05)
        stored = set()
        last = 0
        with httpx.Client(base_url=sb.url, timeout=10) as clean:
            while True:  # read them back (faults also hit reads: retry those)
                r = None
                for _ in range(20):
                    try:
                        r = clean.post("crm.contact.list", json={"filter": {">ID": last}, "order": {"ID": "ASC"},
                                                                 "select": ["ID", "ORIGIN_ID"], "start": -1})
                    except httpx.RemoteProtocolError:
                        continue
                    if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
                        break
                rows = r.json()["result"]
                stored |= {row["ORIGIN_ID"] for row in rows}
                if len(rows) < 50:
                    break
                last = int(rows[-1]["ID"])
        refused = {k for k, o in outcomes.items() if o in ("503", "302")}
        assert stored == set(outcomes) - refused  # every other outcome ran (the client cannot tell 500/drop/html)


def test_the_same_seed_gives_the_same_faults(web):
    runs = []
    for _ in range(2):
        with start_sandbox(limits="off", faults="503=0.2,500=0.1,drop=0.1,drop_before=0.1,seed=42") as sb:
            out = [_outcome(web, sb.url, f"k{i}") for i in range(120)]
            runs.append(out)
            stored = sb.stats.commands["crm.contact.add"]  # what ran
            # drop_before never ran, drop did: the client sees both as a dropped connection
            assert stored == out.count("ok") + out.count("500") + sb.stats.faults["drop"]
            assert out.count("drop") == sb.stats.faults["drop"] + sb.stats.faults["drop_before"]
    assert runs[0] == runs[1] and len(set(runs[0])) == 4
    with start_sandbox(limits="off", faults="503=0.2,500=0.1,drop=0.1,drop_before=0.1,seed=43") as sb:
        assert [_outcome(web, sb.url, f"k{i}") for i in range(120)] != runs[0]


def test_per_command_errors_inside_a_batch_do_not_run_and_the_rest_loads(web):
    with start_sandbox(limits="off", faults="cmd_error=0.1,seed=5") as sb:
        failed, done = set(), set()
        for b in range(20):
            cmd = {f"k{b}_{i}": "crm.contact.add?fields[NAME]=x&fields[ORIGIN_ID]=" + f"k{b}_{i}" for i in range(50)}
            r = web.post(sb.url + "batch", json={"cmd": cmd}).json()["result"]
            errors = r["result_error"] or {}
            for k, e in errors.items():
                assert e["error"] == "ERROR_CORE" and "fault injection" in e["error_description"]
            failed |= set(errors)
            done |= set(r["result"] or {})
        assert failed | done == {f"k{b}_{i}" for b in range(20) for i in range(50)} and not failed & done
        assert _within(len(failed), 1000, 0.1)
        total = web.post(sb.url + "crm.contact.list", json={}).json()["total"]
        assert total == len(done)
        # a single call is never hit by cmd_error
        assert all(web.post(sb.url + "user.current").status_code == 200 for _ in range(50))


def test_fault_specs_are_checked():
    assert parse_faults("503=0.1,slow=0.05:2.5,seed=3").slow_seconds == 2.5
    for bad in ("503", "boom=0.1", "503=2", "500=abc", "503=0.6,500=0.6", "html=0.1:3"):
        with pytest.raises(ValueError):
            parse_faults(bad)
