"""The engineer loads the sample dealer's 1C exports into Bitrix24 (the sandbox portal, over real HTTP), through the
CLI: companies -> contacts -> deals -> sites -> tickets, with every link intact; a rerun creates nothing; a changed
record is updated in place (only what changed, no duplicate phones); a dry run and `etl validate` only read."""

from __future__ import annotations

import json

import pytest

from connectors.bitrix24.sandbox import start_sandbox
from tests.bitrix24_support import (ENV, PIPELINES, add_managers, assert_exactly_once, assert_links_intact,
                                    crosswalk, dead_letters, portal, records, source_rows, truth, type_ids,
                                    use_bitrix24)

WRITES = (".add", ".update", ".set", "batchimport", ".delete")


def _writes(sb) -> int:
    return sum(n for m, n in sb.stats.commands.items() if any(w in m.lower() for w in WRITES))


def _run(cli, project, sb, *args):
    report = project / "report.json"
    res = cli("run", "-C", project, "--report", report, *args, env={ENV: sb.url})
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else None
    return res, data


@pytest.fixture
def sandbox(monkeypatch):
    with start_sandbox(limits="off") as sb:
        monkeypatch.setenv(ENV, sb.url)  # for the test's own reads of the project (load_project)
        yield sb


def test_sample_loads_into_bitrix24_with_every_link_intact(cli, project, sandbox):
    sb = sandbox
    use_bitrix24(project)
    managers = add_managers(sb, project)
    res = cli("validate", "-C", project, env={ENV: sb.url})
    assert res.exit_code == 0, res.output
    assert _writes(sb) == 0  # validate only reads

    res, report = _run(cli, project, sb)
    assert res.exit_code in (0, 1), res.output
    by = {p["pipeline"]: p for p in report["pipelines"]}
    assert list(by) == PIPELINES and all(p["status"] == "ok" for p in by.values())
    facts = truth(project)
    for name in PIPELINES:
        p = by[name]
        assert p["read"] == p["created"] + p["rejected"]
        # every record the source accepts is in the CRM, unless Bitrix24 itself refused it (or a record it links
        # to): then it is a dead letter with that reason
        faulty = {r["key"] for r in facts["files"][name]["faulty_rows"]}
        dead = {sid: reason for sid, reason in dead_letters(project, name)}
        xw = crosswalk(project, name)
        accepted = set(source_rows(project, name)) - faulty
        assert len(xw) == p["created"]
        for key in accepted - set(xw):
            assert dead.get(key) in ("target_refused", "unresolved_link"), (name, key, dead.get(key))
        assert p["reasons"].get("target_refused", 0) > 0 or name != "contacts"
    with portal(sb) as c:
        counts = assert_exactly_once(project, c)
        assert counts == {n: by[n]["created"] for n in PIPELINES}
        assert assert_links_intact(project, c) > 100

        # Bitrix24's own words for what it refused
        refused = [r for r in dead_letters(project, "contacts") if r[1] == "target_refused"]
        assert refused
        # deals: a category per direction, stages mapped to C<N>:CODE
        cats = {c_["name"]: int(c_["id"]) for c_ in c.call("crm.category.list", {"entityTypeId": 2})
                .result["categories"]}
        assert {"Сервис", "Продажа автомобилей", "Запчасти"} <= set(cats)
        deals = records(c, "deals")
        assert all(d["raw"]["STAGE_ID"].startswith(f"C{d['raw']['CATEGORY_ID']}:") for d in deals)
        assert {d["raw"]["STAGE_ID"].split(":")[1] for d in deals} <= {"NEW", "PREPARATION", "PREPAYMENT_INVOICE",
                                                                       "EXECUTING", "FINAL_INVOICE", "WON", "LOSE"}
        # tickets: smart-process stages from the status
        tickets = records(c, "tickets")
        etid = type_ids(c)["Заявки"]
        assert all(t["raw"]["stageId"].startswith(f"DT{etid}_") for t in tickets)
        assert {t["raw"]["stageId"].split(":")[1] for t in tickets} <= {"NEW", "PREPARATION", "SUCCESS", "FAIL"}
        # companies: user fields, multi-fields, responsible users (names in any spelling), historical dates
        companies = {r["key"]: r["raw"] for r in records(c, "companies")}
        facts = truth(project)["companies"]
        inn_ok = [k for k in companies if facts.get(k, {}).get("inn") and companies[k].get("UF_CRM_INN")]
        assert inn_ok
        assert any(len(r.get("PHONE") or []) == 2 for r in companies.values())
        assigned = {int(r["ASSIGNED_BY_ID"]) for r in companies.values()}
        assert assigned & set(managers.values())
        assert any(r["DATE_CREATE"] < "2025" for r in companies.values())
        # sites went in through crm.item.batchImport with their own creation times where the portal allows it
        assert any(s["raw"]["createdTime"] < "2025" for s in records(c, "sites"))


def test_second_run_creates_nothing_and_a_change_updates_in_place(cli, project, sandbox):
    sb = sandbox
    use_bitrix24(project)
    res, first = _run(cli, project, sb)
    assert res.exit_code in (0, 1), res.output
    writes = _writes(sb)
    refused = sum(p["reasons"].get("target_refused", 0) for p in first["pipelines"])
    res, second = _run(cli, project, sb)
    assert res.exit_code in (0, 1), res.output
    assert all(p["created"] == 0 and p["updated"] == 0 for p in second["pipelines"])
    # the only writes sent again are the creates Bitrix24 refused last time (dead letters are retried); they fail
    # again the same way
    assert _writes(sb) - writes == refused
    assert sum(p["reasons"].get("target_refused", 0) for p in second["pipelines"]) == refused
    with portal(sb) as c:
        assert_exactly_once(project, c)

    # the CRM user edits a comment; the source changes one company's name and phones
    key = next(k for k, v in truth(project)["companies"].items() if k in crosswalk(project, "companies"))
    tid = crosswalk(project, "companies")[key]
    with portal(sb) as c:
        before = c.call("crm.company.get", {"id": tid}).result
        c.call("crm.company.update", {"id": tid, "fields": {"COMMENTS": "edited in the CRM"}})
    keep = before["PHONE"][0]
    path = project / "data" / "companies.csv"
    text = path.read_bytes().decode("cp1251")
    lines = text.split("\r\n")
    header = lines[0].split(";")
    i = next(n for n, l in enumerate(lines) if l.startswith(key + ";"))
    cells = lines[i].split(";")
    phone, phone_2 = [n for n, h in enumerate(header) if h == "Телефон"]  # a duplicated header, as 1C writes it
    cells[header.index("Наименование")] = '"ООО ""Переименовано"""'
    cells[phone] = keep["VALUE"]
    cells[phone_2] = "+7 (900) 111-22-33"
    lines[i] = ";".join(cells)
    path.write_bytes("\r\n".join(lines).encode("cp1251"))

    res, third = _run(cli, project, sb)
    assert res.exit_code in (0, 1), res.output
    companies = next(p for p in third["pipelines"] if p["pipeline"] == "companies")
    assert companies["updated"] == 1 and companies["created"] == 0
    with portal(sb) as c:
        after = c.call("crm.company.get", {"id": tid}).result
        assert after["TITLE"] == "ООО \"Переименовано\""
        assert after["COMMENTS"] == "edited in the CRM"  # only changed fields were sent
        phones = after["PHONE"]
        assert [p["VALUE"] for p in phones].count(keep["VALUE"]) == 1  # no duplicate
        assert any(p["ID"] == keep["ID"] for p in phones)  # the entry that stays keeps its ID
        assert {p["VALUE"] for p in phones} == {keep["VALUE"], "+7 (900) 111-22-33"}
        assert_exactly_once(project, c)


def test_dry_run_never_writes(cli, project, sandbox):
    sb = sandbox
    use_bitrix24(project)
    res = cli("run", "-C", project, "--dry-run", env={ENV: sb.url})
    assert res.exit_code in (0, 1), res.output
    assert _writes(sb) == 0 and sb.stats.requests == 0
    res = cli("validate", "-C", project, env={ENV: sb.url})
    assert res.exit_code == 0, res.output
    assert _writes(sb) == 0 and sb.stats.requests > 0


def test_sites_and_tickets_as_universal_lists(cli, project, sandbox):
    sb = sandbox
    use_bitrix24(project, store_as="list")
    res, report = _run(cli, project, sb)
    assert res.exit_code in (0, 1), res.output
    with portal(sb) as c:
        counts = assert_exactly_once(project, c, store_as="list")
        by = {p["pipeline"]: p for p in report["pipelines"]}
        assert counts["sites"] == by["sites"]["created"] and counts["tickets"] == by["tickets"]["created"]
        # the properties were made from the entity's fields; the ticket's site link holds the site element's id
        fields = c.call("lists.field.get", {"IBLOCK_TYPE_ID": "lists", "IBLOCK_CODE": "tickets"}).result
        by_code = {f.get("CODE"): k for k, f in fields.items() if k != "NAME"}
        assert {"SITE_ID", "STATUS", "OPENED_AT"} <= set(by_code)
        tickets = records(c, "tickets", "list")
        sites = {r["id"] for r in records(c, "sites", "list")}
        site_prop = by_code["SITE_ID"]
        linked = [next(iter(t["raw"][site_prop].values())) for t in tickets if t["raw"].get(site_prop)]
        assert linked and set(linked) <= sites
    res, again = _run(cli, project, sb)
    assert all(p["created"] == 0 and p["updated"] == 0 for p in again["pipelines"])


def test_validate_names_bad_target_options(cli, project, sandbox):
    use_bitrix24(project)
    p = project / "pipelines" / "deals.yaml"
    p.write_text(p.read_text(encoding="utf-8") + "  stagez: {}\n", encoding="utf-8")
    q = project / "pipelines" / "sites.yaml"
    q.write_text(q.read_text(encoding="utf-8").replace("smart_process:", "store_as: lists\n  smart_process:"),
                 encoding="utf-8")
    res = cli("validate", "-C", project, "--offline", env={ENV: sandbox.url})
    assert res.exit_code == 2
    out = res.output
    assert "pipelines/deals.yaml" in out and "target_options.stagez" in out and "unknown key 'stagez'" in out
    assert "pipelines/sites.yaml" in out and "target_options.store_as" in out


def test_cloud_limits_are_kept_without_a_single_refusal(cli, project, monkeypatch):
    """A cloud portal (50 requests burst, 2 per second, an operating budget) with a simulated cost per command,
    and more requests than the burst holds: the loader paces itself, the portal never answers 503 or 429."""
    with start_sandbox(limits="cloud", op_cost_ms=2) as sb:
        monkeypatch.setenv(ENV, sb.url)
        use_bitrix24(project, limits="cloud")
        res, report = _run(cli, project, sb, "companies", "contacts", "deals", "--batch-size", "10")
        assert res.exit_code in (0, 1), res.output
        assert all(p["status"] == "ok" for p in report["pipelines"])
        assert sb.stats.requests > 60  # beyond the burst: the bucket had to drain
        assert sb.stats.http_503 == 0 and sb.stats.http_429 == 0 and sb.stats.bucket_rejections == 0
        assert "OPERATION_TIME_LIMIT" not in sb.stats.command_errors
        with portal(sb) as c:
            assert_exactly_once(project, c, ["companies", "contacts", "deals"])
