"""The Bitrix24 REST client against the sandbox portal over real HTTP: it keeps inside both limits, retries only
what did not run, never re-sends a write whose outcome it does not know, renews OAuth tokens, follows a moved
portal, pages with start=-1, and never shows a secret."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base import TerminalError, TransientError
from connectors.bitrix24.auth import OAuthAuth
from connectors.bitrix24.client import Bitrix24Client, BatchOutcomeUnknown, build_query
from connectors.bitrix24.errors import AuthError, MethodError, OutcomeUnknown, ProtocolError, RateLimited, \
    TokenRefreshFailed
from connectors.bitrix24.limiter import Limits
from connectors.bitrix24.sandbox import start_sandbox
from connectors.bitrix24.sandbox.limits import LimitsConfig


def _count(sb, method: str, flt: dict) -> int:
    c = Bitrix24Client(sb.url, limits="off")
    try:
        return len(list(c.list_all(method, {"filter": flt, "select": ["ID"]})))
    finally:
        c.close()


def _no_sleep(_s: float) -> None:
    return None


def test_call_batch_and_php_shaped_answers():
    with start_sandbox(limits="off") as sb, Bitrix24Client(sb.url, limits="off") as c:
        new = c.call("crm.contact.add", {"fields": {"NAME": "Анна", "ORIGINATOR_ID": "t", "ORIGIN_ID": "1",
                                                     "PHONE": [{"VALUE": "+7 900 000-00-01", "VALUE_TYPE": "WORK"}]}})
        assert isinstance(new.result, int)
        # keys "0", "1": PHP answers the sections as lists; the client gives maps either way
        ans = c.batch({"0": ("crm.contact.get", {"id": new.result}), "1": ("crm.contact.get", {"id": 999999})})
        assert ans.results["0"]["NAME"] == "Анна" and ans.results["0"]["ORIGIN_ID"] == "1"
        assert ans.results["0"]["PHONE"][0]["VALUE"] == "+7 900 000-00-01"
        assert isinstance(ans.errors["1"], MethodError) and "Not found" in str(ans.errors["1"])
        # a batch command is a PHP query string: brackets, operators in keys, Cyrillic, & and = in values
        q = build_query({"filter": {">=DATE": "2024-01-01", "@ID": [1, 2]}, "fields": {"TITLE": "A&B=C Ёж"}})
        assert q == ("filter[%3E%3DDATE]=2024-01-01&filter[%40ID][0]=1&filter[%40ID][1]=2&"
                     "fields[TITLE]=A%26B%3DC%20%D0%81%D0%B6")
        ans = c.batch({"f": ("crm.contact.list", {"filter": {"@ORIGIN_ID": ["1", "2"], "ORIGINATOR_ID": "t"},
                                                 "select": ["ID", "NAME"]})})
        assert [r["NAME"] for r in ans.results["f"]] == ["Анна"]


def test_list_all_pages_by_id_without_counting():
    with start_sandbox(limits="off") as sb, Bitrix24Client(sb.url, limits="off") as c:
        for start in range(0, 120, 50):
            c.batch({f"a{i}": ("crm.company.add", {"fields": {"TITLE": f"Company {i}"}})
                     for i in range(start, min(start + 50, 120))})
        rows = list(c.list_all("crm.company.list", {"select": ["TITLE"]}))
        assert [int(r["ID"]) for r in rows] == sorted(int(r["ID"]) for r in rows)
        assert len(rows) == 120 and len({r["ID"] for r in rows}) == 120
        assert {r["TITLE"] for r in rows} == {f"Company {i}" for i in range(120)}


def test_leaky_bucket_is_never_overrun():
    """A small bucket (10, 20/s) and 60 requests as fast as the client can: not one 503."""
    cfg = LimitsConfig("small", 10, 20.0, None)
    with start_sandbox(limits=cfg) as sb, Bitrix24Client(sb.url, limits=Limits(burst=10, rate=20.0,
                                                                                 operating=None)) as c:
        for i in range(60):
            c.call("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
        assert sb.stats.http_503 == 0 and sb.stats.bucket_rejections == 0
        assert c.limiter.stats.bucket_waits > 0  # it did have to wait
        assert _count(sb, "crm.contact.list", {}) == 60


def test_operating_budget_is_never_overrun():
    """A tiny operating budget (1 s over a 4 s window of 1 s buckets) and a 50 ms cost per command: the client
    waits until enough of the budget has dropped; the portal never refuses, neither the request nor a command."""
    cfg = LimitsConfig("tiny", None, 0.0, 1.0, window=4.0, bucket_seconds=1.0)
    with start_sandbox(limits=cfg, op_cost_ms=50, op_sleep=False) as sb, \
            Bitrix24Client(sb.url, limits=Limits(burst=None, operating=1.0, window=4.0, bucket_seconds=1.0)) as c:
        for i in range(6):
            ans = c.batch({f"k{j}": ("crm.contact.add", {"fields": {"NAME": f"n{i}-{j}"}}) for j in range(5)})
            assert not ans.errors
        assert sb.stats.http_429 == 0
        assert "OPERATION_TIME_LIMIT" not in sb.stats.command_errors
        assert c.limiter.stats.operating_waits >= 1
        assert _count(sb, "crm.contact.list", {}) == 30


def test_commands_refused_by_the_budget_are_sent_again_after_the_reset():
    """A client that believes the budget is bigger than it is: the commands the portal refuses inside the batch
    (OPERATION_TIME_LIMIT in result_error: they did not run) go again once the budget has dropped."""
    cfg = LimitsConfig("tiny", None, 0.0, 0.3, window=3.0, bucket_seconds=1.0)
    with start_sandbox(limits=cfg, op_cost_ms=50, op_sleep=False) as sb, \
            Bitrix24Client(sb.url, limits=Limits(burst=None, operating=1000.0, window=3.0, bucket_seconds=1.0)) as c:
        ans = c.batch({f"k{j}": ("crm.contact.add", {"fields": {"NAME": f"n{j}"}}) for j in range(10)})
        assert not ans.errors and len(ans.results) == 10
        assert sb.stats.command_errors.get("OPERATION_TIME_LIMIT", 0) > 0
        assert c.stats.refused_commands > 0
        assert _count(sb, "crm.contact.list", {}) == 10  # each exactly once


@pytest.mark.parametrize("fault", ["500", "drop", "html"])
def test_a_write_without_a_trustworthy_answer_is_not_sent_again(fault):
    """The method ran, the answer was lost: the client says so and does not repeat it (that would duplicate)."""
    with start_sandbox(limits="off", faults=f"{fault}=1") as sb, \
            Bitrix24Client(sb.url, limits="off", sleep=_no_sleep) as c:
        with pytest.raises(BatchOutcomeUnknown) as e:
            c.batch({"a": ("crm.contact.add", {"fields": {"NAME": "X", "ORIGIN_ID": "k1", "ORIGINATOR_ID": "t"}})})
        assert isinstance(e.value, TransientError) and e.value.pending == ["a"]
        with pytest.raises(OutcomeUnknown):
            c.call("crm.contact.add", {"fields": {"NAME": "Y"}})
        assert sb.stats.requests == 2  # one each, never repeated
    # it ran indeed
    assert sb.stats.commands["crm.contact.add"] == 2


def test_reads_are_retried_and_refusals_never_ran():
    with start_sandbox(limits="off", faults="500=1") as sb, \
            Bitrix24Client(sb.url, limits="off", retries=3, sleep=_no_sleep) as c:
        with pytest.raises(ProtocolError):
            c.call("crm.contact.list", {"select": ["ID"]})
        assert sb.stats.requests == 3
    with start_sandbox(limits="off", faults="503=1") as sb, \
            Bitrix24Client(sb.url, limits="off", retries=4, sleep=_no_sleep) as c:
        with pytest.raises(RateLimited):
            c.call("crm.contact.add", {"fields": {"NAME": "Z"}})
        assert sb.stats.requests == 4  # a 503 is refused before it runs: safe to repeat, even a write
        assert sb.stats.commands.get("crm.contact.add", 0) == 0
    with start_sandbox(limits="off", faults="503=0.5,drop_before=0.2,seed=3") as sb, \
            Bitrix24Client(sb.url, limits="off", retries=20, sleep=_no_sleep) as c:
        for i in range(20):
            c.call("crm.contact.list", {"select": ["ID"]})  # reads get through whatever the faults
        assert sb.stats.faults["503"] > 0


def test_oauth_token_is_renewed_once_and_kept(tmp_path):
    with start_sandbox(limits="off") as sb:
        tok = sb.issue_token()
        store = tmp_path / "tokens.json"
        auth = OAuthAuth(sb.oauth_base, tok["access_token"], tok["refresh_token"], sb.oauth_client_id,
                         sb.oauth_client_secret, token_url=sb.token_url, token_file=store)
        with Bitrix24Client(oauth=auth, limits="off") as c:
            assert isinstance(c.call("crm.contact.add", {"fields": {"NAME": "A"}}).result, int)
            sb.expire_tokens()
            assert isinstance(c.call("crm.contact.add", {"fields": {"NAME": "B"}}).result, int)
            assert auth.refreshes == 1
            saved = json.loads(store.read_text())
            assert saved["access_token"] == auth.tokens.access_token != tok["access_token"]
            assert saved["refresh_token"] != tok["refresh_token"]  # the refresh token rotated
        # the next start reads the kept pair (the configured one is spent)
        auth2 = OAuthAuth(sb.oauth_base, tok["access_token"], tok["refresh_token"], sb.oauth_client_id,
                          sb.oauth_client_secret, token_url=sb.token_url, token_file=store)
        with Bitrix24Client(oauth=auth2, limits="off") as c:
            assert c.call("crm.contact.list", {"select": ["ID"]}).result
        # a spent refresh token: a clear, masked, terminal error
        sb.expire_tokens()
        auth3 = OAuthAuth(sb.oauth_base, tok["access_token"], tok["refresh_token"], sb.oauth_client_id,
                          sb.oauth_client_secret, token_url=sb.token_url)
        with Bitrix24Client(oauth=auth3, limits="off") as c:
            with pytest.raises(TokenRefreshFailed) as e:
                c.call("crm.contact.list", {"select": ["ID"]})
        assert isinstance(e.value, TerminalError) and "invalid_grant" in str(e.value)
        assert tok["refresh_token"] not in str(e.value) and sb.oauth_client_secret not in str(e.value)


class _Moved(BaseHTTPRequestHandler):
    target = ""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_a_moved_portal_is_followed_with_the_body():
    """A portal moved to another domain answers 302: the client switches and repeats the POST (a blind follow
    would drop the body)."""
    with start_sandbox(limits="off", webhook_token="movedtoken42") as sb:
        old = ThreadingHTTPServer(("127.0.0.1", 0), _Moved)
        _Moved.target = sb.base
        threading.Thread(target=old.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{old.server_address[1]}/rest/1/movedtoken42/"
            with Bitrix24Client(url, limits="off") as c:
                new = c.call("crm.company.add", {"fields": {"TITLE": "Moved Ltd"}}).result
                got = c.call("crm.company.get", {"id": new}).result
                assert got["TITLE"] == "Moved Ltd"
                assert str(sb.port) in c.display
        finally:
            old.shutdown()
            old.server_close()


def test_secrets_never_show(caplog):
    caplog.set_level(logging.DEBUG, logger="crm_etl.bitrix24")
    with start_sandbox(limits="off", faults="500=1", webhook_token="s3cr3tHookCode") as sb:
        with Bitrix24Client(sb.url, limits="off", retries=2, sleep=_no_sleep) as c:
            with pytest.raises(ProtocolError) as e:
                c.call("crm.contact.list", {})
            assert "s3cr3tHookCode" not in str(e.value) and "s3cr3tHookCode" not in c.display
        bad = sb.url.replace("s3cr3tHookCode", "wrongWrongWrong1")
        with Bitrix24Client(bad, limits="off") as c:
            with pytest.raises(AuthError) as e:
                c.call("crm.contact.list", {})
            assert "INVALID_CREDENTIALS" in str(e.value) and "wrongWrongWrong1" not in str(e.value)
    assert caplog.records and "s3cr3tHookCode" not in caplog.text
