"""batch on the sandbox: 50 commands, $result references, halt, the five sections and PHP's list-vs-map quirks."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox


@pytest.fixture
def sb():
    with start_sandbox(limits="off") as s:
        yield s


@pytest.fixture
def http(sb):
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        yield c


def batch(http, cmd, halt=None, form=False):
    body = {"cmd": cmd}
    if halt is not None:
        body["halt"] = halt
    if form:
        items = cmd.items() if isinstance(cmd, dict) else enumerate(cmd)
        data = {f"cmd[{k}]": v for k, v in items}
        if halt is not None:
            data["halt"] = "1" if halt else "0"
        r = http.post("batch", data=data)
    else:
        r = http.post("batch", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_commands_chain_through_result_references_and_every_section_is_there(http):
    out = batch(http, {
        "co": "crm.company.add?fields[TITLE]=" + quote("ООО Вектор"),
        "ct": "crm.contact.add?fields[NAME]=Ivan&fields[COMPANY_ID]=$result[co]",
        "get": "crm.contact.get?id=$result[ct]",
        "deal": "crm.deal.add?fields[TITLE]=For $result[get][NAME]&fields[CONTACT_ID]=$result[get][ID]",
        "list": "crm.contact.list?filter[ID]=$result[ct]&select[]=ID&select[]=COMPANY_ID",
        "again": "crm.deal.get?id=$result[deal]",
        "first": "crm.contact.get?id=$result[list][0][ID]",
    })
    assert set(out) == {"result", "time"}
    r = out["result"]
    assert set(r) == {"result", "result_error", "result_total", "result_next", "result_time"}
    res = r["result"]
    assert isinstance(res["co"], int) and res["get"]["COMPANY_ID"] == str(res["co"])
    assert res["again"]["TITLE"] == "For Ivan" and res["again"]["CONTACT_ID"] == str(res["ct"])
    assert res["list"] == [{"ID": str(res["ct"]), "COMPANY_ID": str(res["co"])}]
    assert res["first"]["ID"] == str(res["ct"])
    assert r["result_error"] == [] and r["result_total"] == {"list": 1} and r["result_next"] == []
    assert set(r["result_time"]) == set(res) and {"start", "finish", "duration"} <= set(r["result_time"]["co"])


def test_a_form_encoded_batch_with_a_list_of_commands_answers_lists(http):
    out = batch(http, ["crm.contact.add?fields%5BNAME%5D=A", "crm.contact.add?fields[NAME]=B"], form=True)["result"]
    assert isinstance(out["result"], list) and len(out["result"]) == 2  # keys 0..n-1: a list
    assert isinstance(out["result_time"], list) and out["result_error"] == []
    one = batch(http, ["crm.contact.list?select[]=ID"])["result"]
    assert one["result"] == [[{"ID": "1"}, {"ID": "2"}]] and one["result_total"] == [2]


def test_a_failed_command_keeps_the_rest_and_its_reference_stays_literal(http):
    out = batch(http, {"bad": "crm.contact.get?id=999", "ok": "crm.contact.add?fields[NAME]=X",
                       "ref": "crm.contact.add?fields[NAME]=$result[bad][NAME]", "deep": "crm.contact.get?id=$result[ok]"})
    r = out["result"]
    assert r["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    assert set(r["result"]) == {"ok", "ref", "deep"}
    assert r["result"]["deep"]["NAME"] == "X"
    assert http.post("crm.contact.get", json={"id": r["result"]["ref"]}).json()["result"]["NAME"] == "$result[bad][NAME]"


def test_halt_stops_at_the_first_failure_and_earlier_commands_stay_committed(http):
    out = batch(http, {"a": "crm.contact.add?fields[NAME]=kept", "b": "crm.contact.update?id=999&fields[NAME]=x",
                       "c": "crm.contact.add?fields[NAME]=never"}, halt=True)["result"]
    assert list(out["result"]) == ["a"] and list(out["result_error"]) == ["b"] and "c" not in out["result_time"]
    names = [c["NAME"] for c in http.post("crm.contact.list", json={}).json()["result"]]
    assert names == ["kept"]
    form = batch(http, {"a": "crm.contact.get?id=999", "b": "crm.contact.add?fields[NAME]=no"}, halt=True,
                 form=True)["result"]
    assert form["result"] == [] and list(form["result_error"]) == ["a"]


def test_list_commands_report_total_and_next(http):
    batch(http, {f"c{i}": f"crm.contact.add?fields[NAME]=N{i}" for i in range(50)})
    batch(http, {f"c{i}": f"crm.contact.add?fields[NAME]=M{i}" for i in range(10)})
    r = batch(http, {"p1": "crm.contact.list?order[ID]=ASC&select[]=ID",
                     "p2": "crm.contact.list?order[ID]=ASC&select[]=ID&start=$result_next[p1]",
                     "k": "crm.contact.list?order[ID]=ASC&select[]=ID&start=-1&filter[>ID]=$result[p1][49][ID]",
                     "u": "user.current"})["result"]
    assert r["result_total"] == {"p1": 60, "p2": 60, "k": 0}  # start=-1: no count, total 0
    assert r["result_next"] == {"p1": 50, "p2": 50}
    assert len(r["result"]["k"]) == 10 and "u" not in r["result_total"]
    # only $result[..] is substituted: $result_next stays text, so p2 reads from the start
    assert r["result"]["p2"][0]["ID"] == "1"


def test_more_than_50_commands_and_nested_batch_are_refused(http):
    r = http.post("batch", json={"cmd": {f"c{i}": "user.current" for i in range(51)}})
    assert r.status_code == 400
    assert r.json() == {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
    out = batch(http, {"n": "batch?cmd[x]=user.current", "m": "no.such.method"})["result"]
    assert out["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert out["result_error"]["m"]["error"] == "ERROR_METHOD_NOT_FOUND"


def test_crm_item_wrappers_stay_in_command_results_and_can_be_referenced(http):
    t = http.post("crm.type.add", json={"fields": {"title": "S"}}).json()["result"]["type"]["entityTypeId"]
    out = batch(http, {"a": f"crm.item.add?entityTypeId={t}&fields[title]=one",
                       "b": f"crm.item.get?entityTypeId={t}&id=$result[a][item][id]",
                       "l": f"crm.item.list?entityTypeId={t}&select[]=id"})["result"]
    assert out["result"]["b"]["item"]["title"] == "one"
    assert out["result"]["l"] == {"items": [{"id": out["result"]["a"]["item"]["id"], "entityTypeId": t}]}
    assert out["result_total"] == {"l": 1}
