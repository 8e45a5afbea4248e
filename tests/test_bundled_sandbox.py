"""The README's first command: `etl init . && etl run` loads the sample into the bundled Bitrix24 sandbox."""

from __future__ import annotations

import json

import httpx

from connectors.bitrix24.sandbox import start_sandbox


def test_the_sample_project_loads_into_the_bundled_sandbox_end_to_end(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("ETL_TARGET", raising=False)  # the project's own default: the bundled sandbox
    project = tmp_path / "p"
    assert cli("init", project, "--companies", "40").exit_code == 0
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    done = {e["pipeline"]: e for e in map(json.loads, res.output.splitlines()) if e["event"] == "pipeline_finished"}
    assert set(done) == {"companies", "contacts", "deals", "sites", "tickets"}
    for r in done.values():
        assert r["status"] == "ok" and r["created"] > 0
        assert r["read"] == r["created"] + r["updated"] + r["unchanged"] + r["rejected"]

    # the portal, opened again on the sandbox's database, holds exactly what was created, with its keys
    with start_sandbox(f"sqlite:///{project / '.etl' / 'sandbox.db'}", limits="off") as sb:
        def total(method: str, **params) -> int:
            body = httpx.post(sb.url + method, json=params, timeout=30).json()
            return body["total"]

        assert total("crm.company.list") == done["companies"]["created"]
        assert total("crm.contact.list") == done["contacts"]["created"]
        assert total("crm.deal.list") == done["deals"]["created"]
        types = httpx.post(sb.url + "crm.type.list", json={}, timeout=30).json()["result"]["types"]
        by_title = {t["title"]: t["entityTypeId"] for t in types}
        assert total("crm.item.list", entityTypeId=by_title["Объекты"]) == done["sites"]["created"]
        assert total("crm.item.list", entityTypeId=by_title["Заявки"]) == done["tickets"]["created"]
        first = httpx.post(sb.url + "crm.contact.list", json={"select": ["ORIGINATOR_ID", "ORIGIN_ID"]},
                           timeout=30).json()["result"][0]
        assert first["ORIGINATOR_ID"] == "onec" and first["ORIGIN_ID"]

    # a second run sends nothing new
    res = cli("run", "--json", "-C", project)
    again = [e for e in map(json.loads, res.output.splitlines()) if e["event"] == "run_finished"][0]
    assert again["created"] == 0 and again["updated"] == 0
