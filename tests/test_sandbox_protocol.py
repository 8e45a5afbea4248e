"""The Bitrix24 sandbox speaks the protocol: URLs and credentials, encodings, envelopes, error codes and statuses.

Every test talks to a real server over HTTP with httpx, as a client of a real portal would.
"""

from __future__ import annotations

import json

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox
from connectors.bitrix24.sandbox.params import parse_query


@pytest.fixture
def sb():
    with start_sandbox(limits="off") as s:
        yield s


@pytest.fixture
def web():
    """A client for absolute URLs (one client: web.post() builds a new SSL context per call)."""
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def http(sb):
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        yield c


def test_a_contact_added_over_json_comes_back_with_legacy_types_and_the_full_time_block(sb, http):
    r = http.post("crm.contact.add", json={"fields": {"NAME": "Анна", "LAST_NAME": "Смирнова",
                                                      "ORIGINATOR_ID": "1c-erp", "ORIGIN_ID": "C-1",
                                                      "PHONE": [{"VALUE": "+7 495 000-00-01", "VALUE_TYPE": "WORK"}]}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["result"], int) and body["result"] > 0
    t = body["time"]
    assert set(t) == {"start", "finish", "duration", "processing", "date_start", "date_finish"}  # limits off
    assert isinstance(t["start"], float) and t["finish"] >= t["start"]
    assert t["date_start"].endswith("+03:00")
    got = http.get("crm.contact.get", params={"id": body["result"]}).json()["result"]
    assert got["ID"] == str(body["result"]) and got["NAME"] == "Анна"
    assert got["ASSIGNED_BY_ID"] == "1" and got["OPENED"] == "Y" and got["HAS_PHONE"] == "Y"
    assert got["ORIGINATOR_ID"] == "1c-erp" and got["ORIGIN_ID"] == "C-1"
    assert got["PHONE"] == [{"ID": got["PHONE"][0]["ID"], "VALUE_TYPE": "WORK", "VALUE": "+7 495 000-00-01",
                             "TYPE_ID": "PHONE"}]
    assert "EMAIL" not in got  # multi-fields only when set
    assert "COMPANY_IDS" not in got
    # PHP's JSON: non-ASCII as \\uXXXX
    raw = http.get("crm.contact.get", params={"id": body["result"]}).text
    assert "\\u0410\\u043d\\u043d\\u0430" in raw and "Анна" not in raw


def test_cloud_limits_add_operating_fields_to_every_time_block(web):
    with start_sandbox(limits="cloud") as s:
        t = web.post(s.url + "user.current").json()["time"]
        assert isinstance(t["operating"], float) and isinstance(t["operating_reset_at"], int)
        assert t["operating_reset_at"] > t["start"]


def test_form_encoded_php_brackets_and_get_queries_mean_the_same_as_json(sb, http):
    form = {"fields[NAME]": "Олег", "fields[PHONE][0][VALUE]": "+79001112233", "fields[PHONE][0][VALUE_TYPE]": "MOBILE",
            "fields[EMAIL][0][VALUE]": "oleg@example.com", "params[REGISTER_SONET_EVENT]": "N"}
    cid = http.post("crm.contact.add", data=form).json()["result"]
    c = http.get("crm.contact.get", params={"ID": cid}).json()["result"]  # upper-case ID works too
    assert c["PHONE"][0]["VALUE"] == "+79001112233" and c["PHONE"][0]["VALUE_TYPE"] == "MOBILE"
    assert c["EMAIL"][0]["VALUE"] == "oleg@example.com"
    # GET with select[] and an operator inside the key
    rows = http.get("crm.contact.list", params=[("filter[>=ID]", str(cid)), ("select[]", "ID"),
                                                ("select[]", "NAME")]).json()["result"]
    assert rows == [{"ID": str(cid), "NAME": "Олег"}]
    # upper-case top-level names (FIELDS, FILTER) are read case-insensitively by legacy CRM
    cid2 = http.post("crm.contact.add", json={"FIELDS": {"NAME": "Вера"}}).json()["result"]
    assert http.post("crm.contact.list", json={"FILTER": {"ID": cid2}}).json()["total"] == 1
    # multipart/form-data bodies
    cid3 = http.post("crm.contact.add", files={"fields[NAME]": (None, "Мира")}).json()["result"]
    assert http.get("crm.contact.get", params={"id": cid3}).json()["result"]["NAME"] == "Мира"


def test_form_values_are_text_so_false_becomes_0_and_json_null_clears(sb, http):
    cid = http.post("crm.contact.add", json={"fields": {"NAME": "X", "POST": "Director"}}).json()["result"]
    http.post("crm.contact.update", data={"id": cid, "fields[EXPORT]": "0"})
    assert http.get("crm.contact.get", params={"id": cid}).json()["result"]["EXPORT"] == "N"
    http.post("crm.contact.update", json={"id": cid, "fields": {"POST": None}})
    assert http.get("crm.contact.get", params={"id": cid}).json()["result"]["POST"] is None
    http.post("crm.contact.update", data={"id": cid, "fields[POST]": "None"})  # text, not a clear (fb24#156)
    assert http.get("crm.contact.get", params={"id": cid}).json()["result"]["POST"] == "None"


def test_method_url_forms_json_suffix_trailing_slash_and_case(sb, http):
    assert http.post("crm.contact.add.json", json={"fields": {"NAME": "A"}}).status_code == 200
    assert http.post("crm.contact.list/", json={}).json()["total"] == 1
    assert http.post("CRM.Contact.List", json={}).json()["total"] == 1


def test_unknown_method_is_404_error_method_not_found(sb, http, web):
    r = http.post("crm.contact.explode", json={})
    assert r.status_code == 404 and r.json()["error"] == "ERROR_METHOD_NOT_FOUND"
    r = web.post(sb.base + "/rest/api/crm.item.list")  # REST 3.0 is not served
    assert r.status_code == 404 and r.json()["error"] == "ERROR_METHOD_NOT_FOUND"


def test_a_wrong_webhook_token_or_user_is_401_invalid_credentials(sb, web):
    for url in (f"{sb.base}/rest/1/not-the-token/user.current", f"{sb.base}/rest/7/{sb.webhook_token}/user.current"):
        r = web.post(url)
        assert r.status_code == 401
        assert r.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


def test_oauth_access_token_expires_and_the_token_server_refreshes_it(sb, web):
    tok = sb.issue_token()
    assert tok["expires_in"] == 3600 and tok["client_endpoint"] == sb.oauth_base
    r = web.post(sb.oauth_base + "user.current", json={"auth": tok["access_token"]})
    assert r.status_code == 200 and r.json()["result"]["ID"] == "1"
    r = web.get(sb.oauth_base + "user.current", params={"auth": tok["access_token"]})  # in the query too
    assert r.status_code == 200
    assert web.post(sb.oauth_base + "user.current").json()["error"] == "NO_AUTH_FOUND"
    assert web.post(sb.oauth_base + "user.current", data={"auth": "garbage"}).json()["error"] == "invalid_token"
    sb.expire_tokens()
    r = web.post(sb.oauth_base + "user.current", json={"auth": tok["access_token"]})
    assert r.status_code == 401
    assert r.json() == {"error": "expired_token", "error_description": "The access token provided has expired."}
    refresh = {"grant_type": "refresh_token", "client_id": sb.oauth_client_id,
               "client_secret": sb.oauth_client_secret, "refresh_token": tok["refresh_token"]}
    new = web.get(sb.token_url, params=refresh).json()
    assert new["access_token"] != tok["access_token"] and new["refresh_token"] != tok["refresh_token"]
    assert web.post(sb.oauth_base + "user.current", json={"auth": new["access_token"]}).status_code == 200
    # a refresh token is spent once; a wrong client secret is refused
    again = web.get(sb.token_url, params=refresh)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    bad = web.get(sb.token_url, params={**refresh, "refresh_token": new["refresh_token"], "client_secret": "x"})
    assert bad.json()["error"] == "invalid_client"


def test_legacy_validation_errors_are_400_with_the_documented_texts(sb, http):
    r = http.post("crm.contact.add", json={"fields": "nope"})
    assert r.status_code == 400 and r.json() == {"error": "", "error_description": "Parameter 'fields' must be array."}
    r = http.post("crm.contact.get", json={"id": "abc"})
    assert r.status_code == 400 and r.json()["error_description"] == "ID is not defined or invalid."
    r = http.post("crm.contact.get", json={"id": 999})
    assert r.status_code == 400 and r.json() == {"error": "", "error_description": "Not found"}
    r = http.post("crm.contact.update", json={"id": 999, "fields": {"NAME": "x"}})
    assert r.json()["error_description"] == "Contact is not found."
    r = http.post("crm.contact.add", json={"fields": {"EMAIL": [{"VALUE": "not an e-mail"}]}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"
    r = http.post("crm.company.add", json={"fields": {"COMMENTS": "no title"}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE" and "required" in r.json()["error_description"]
    r = http.post("crm.deal.delete", json={"id": 5})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"


def test_crm_item_errors_use_the_universal_codes(sb, http):
    r = http.post("crm.item.get", json={"entityTypeId": 3, "id": 12345})
    assert r.status_code == 400 and r.json() == {"error": "NOT_FOUND", "error_description": "Element not found"}
    r = http.post("crm.item.list", json={"entityTypeId": 1999})
    assert r.json()["error"] == "NOT_FOUND"
    r = http.post("crm.item.list", json={"entityTypeId": 3, "filter": {"noSuchField": 1}})
    assert r.json() == {"error": "INVALID_ARG_VALUE",
                        "error_description": "Invalid filter: field 'noSuchField' is not allowed in filter"}
    r = http.post("crm.item.add", json={"entityTypeId": 3})
    assert r.json()["error"] == "100"
    r = http.post("crm.item.add", json={"entityTypeId": 2, "fields": {"stageId": "NO_SUCH_STAGE"}})
    assert r.json()["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID"


def test_php_array_quirks_empty_map_is_a_list_and_escapes_match_php(sb, http):
    raw = http.post("batch", json={"cmd": {"a": "user.current"}}).text
    body = json.loads(raw)
    assert body["result"]["result_error"] == [] and body["result"]["result_total"] == []
    item = http.post("crm.item.add", json={"entityTypeId": 3, "fields": {"name": 'Say "hi"', "comments": "a/b <c>"}})
    text = item.text
    assert '\\u0022hi\\u0022' in text and "a\\/b \\u003Cc\\u003E" in text
    cid = item.json()["result"]["item"]["id"]
    assert http.post("crm.item.delete", json={"entityTypeId": 3, "id": cid}).json()["result"] == []


def test_the_bracket_parser_follows_php_parse_str():
    assert parse_query("0=123&1[POST_MESSAGE]=hi") == {"0": "123", "1": {"POST_MESSAGE": "hi"}}
    assert parse_query("select[]=ID&select[]=NAME&a[x][]=1&a[x][]=2") == {
        "select": {"0": "ID", "1": "NAME"}, "a": {"x": {"0": "1", "1": "2"}}}
    assert parse_query("filter%5B%3E%3DDATE_CREATE%5D=2024-01-01&q=a+b%26c") == {
        "filter": {">=DATE_CREATE": "2024-01-01"}, "q": "a b&c"}
    assert parse_query("a.b=1&c d=2&e[f=3&[g]=4") == {"a_b": "1", "c_d": "2", "e_f": "3"}
    assert parse_query("a=1&a[b]=2") == {"a": {"b": "2"}}
