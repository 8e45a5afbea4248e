"""A migration engineer loads a client base where managers entered the same people two and three times under
different codes: phones in other formats, e-mails in capitals, initials instead of names. With a `dedupe:` block
the pipeline loads each person once, into the bundled Bitrix24 sandbox; links from deals to any of the duplicates
land on the one contact; a later file with one more copy of someone joins the contact already loaded; a contact a
user typed into the portal by hand is found there (crm.duplicate.findbycomm) and not created twice; companies are
merged by INN + KPP, never across branches. Every merged record is counted and listed in `etl dedupe report`."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox
from etl.dedupe import match_keys, normal_phone
from etl.sample.duplicates import pair_scores, write_duplicate_companies, write_duplicate_contacts

PROJECT = """\
version: 1
name: dedupe-story
state:
  url: ${{ETL_STATE_URL:-sqlite:///.etl/state.db}}
defaults:
  batch_size: {batch}
  max_reject_rate: 0.5
sources:
  onec: {{type: onec_flat, dir: data}}
targets:
  crm:
    type: bitrix24
    sandbox: {{db: sqlite:///.etl/sandbox.db}}
  warehouse:
    type: sql
    url: sqlite:///.etl/warehouse.db
target: {target}
pipelines: [{pipelines}]
"""

CONTACTS = """\
entity: contact
source:
  use: onec
  files: {file}
  types: {{Изменен: datetime}}
key: Код
stages:
  - type: name
    columns: [ФИО]
    into: {{last: Фамилия, first: Имя, middle: Отчество}}
  - {{type: phone, columns: [Телефон], on_error: null}}
  - {{type: email, columns: [ЭлПочта], on_error: null}}
mapping:
  full_name: ФИО
  last_name: Фамилия
  name: Имя
  second_name: Отчество
  phone: Телефон
  email: ЭлПочта
  modified_at: Изменен
dedupe:
{dedupe}
"""

DEALS = """\
entity: deal
source: {use: onec, files: deals.csv}
key: Номер
mapping:
  title: Название
links:
  contact: {pipeline: contacts, column: Клиент}
"""

COMPANIES = """\
entity: company
source: {use: onec, files: companies.csv}
key: Код
stages:
  - {type: inn, columns: [ИНН]}
  - {type: phone, columns: [Телефон], on_error: null}
mapping:
  title: Наименование
  inn: ИНН
  kpp: КПП
  phone: Телефон
target_options:
  fields: {inn: UF_CRM_INN, kpp: UF_CRM_KPP}
dedupe:
  match: [[inn, kpp]]
  policy: fill_empty
"""

GUARDED = "  match: [[phone], [email]]\n  distinct_by: [name, last_name]\n  policy: fill_empty"


def make_project(root: Path, *, dedupe: str = GUARDED, pipelines: str = "contacts", target: str = "crm",
                 batch: int = 100, contacts_file: str = "contacts.csv") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines.yaml").write_text(PROJECT.format(batch=batch, target=target, pipelines=pipelines),
                                         encoding="utf-8")
    (root / "pipelines" / "contacts.yaml").write_text(CONTACTS.format(dedupe=dedupe, file=contacts_file),
                                                      encoding="utf-8")
    (root / "pipelines" / "deals.yaml").write_text(DEALS, encoding="utf-8")
    (root / "pipelines" / "companies.yaml").write_text(COMPANIES, encoding="utf-8")
    return root


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="cp1251", newline="") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)


def finished(output: str) -> dict[str, dict]:
    events = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
    return {e["pipeline"]: e for e in events if e["event"] == "pipeline_finished"}


def crosswalk(project: Path, pipeline: str) -> dict[str, str]:
    with sqlite3.connect(project / ".etl" / "state.db") as c:
        return dict(c.execute("SELECT source_id, target_id FROM etl_crosswalk WHERE pipeline = ?", (pipeline,)))


def portal(project: Path):
    return start_sandbox(f"sqlite:///{project / '.etl' / 'sandbox.db'}", limits="off")


def call(sb, method: str, **params):
    body = httpx.post(sb.url + method, json=params, timeout=30).json()
    assert "error" not in body, body
    return body


def balanced(r: dict) -> bool:
    return r["read"] == r["created"] + r["updated"] + r["unchanged"] + r["rejected"]


CONTACT_HEADER = ["Код", "ФИО", "Телефон", "ЭлПочта", "Изменен"]


def test_a_client_base_with_duplicates_loads_each_person_once(tmp_path, cli):
    project = make_project(tmp_path / "p")
    truth = write_duplicate_contacts(project / "data" / "contacts.csv", people=400, seed=11)

    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    r = finished(res.output)["contacts"]
    assert balanced(r) and r["read"] == truth["records"] and r["rejected"] == 0
    assert r["merged"] == r["updated"] > 0

    scores = pair_scores(truth["person"], crosswalk(project, "contacts"))
    print(f"\ndedupe on {truth['records']} generated contacts of {truth['people']} people "
          f"({truth['households']} relatives sharing a phone): precision {scores['precision']:.3f}, "
          f"recall {scores['recall']:.3f} ({scores['correct_pairs']} of {scores['true_pairs']} true pairs, "
          f"{scores['found_pairs']} found)")
    assert scores["precision"] >= 0.98 and scores["recall"] >= 0.90  # a few changed phone and e-mail both
    assert r["created"] == len(set(crosswalk(project, "contacts").values()))

    with portal(project) as sb:
        assert call(sb, "crm.contact.list")["total"] == r["created"]

    # the report lists every merged record with the key that matched it
    out = tmp_path / "merged.csv"
    rep = cli("dedupe", "report", "contacts", "-o", out, "-C", project)
    assert rep.exit_code == 0, rep.output
    with open(out, encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    merged_rows = [x for x in rows if x["role"] == "merged"]
    assert len(merged_rows) == r["merged"]
    assert all(x["match_key"].split(":")[0] in ("phone", "email") for x in merged_rows)
    assert "records merged: " in rep.output

    status = cli("status", "--json", "-C", project)
    (st,) = [json.loads(x) for x in status.output.splitlines() if '"status"' in x and '"contacts"' in x]
    assert st["merged"] == r["merged"] and st["crosswalk"] == r["read"]

    # a second run changes nothing
    again = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert again["unchanged"] == r["read"] and again["created"] == again["updated"] == 0


def test_a_dry_run_plans_the_merges_a_real_run_makes(tmp_path, cli):
    project = make_project(tmp_path / "p", batch=50)
    write_duplicate_contacts(project / "data" / "contacts.csv", people=150, seed=5)
    plan = finished(cli("run", "--dry-run", "--json", "-C", project).output)["contacts"]
    real = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert plan["status"] == "planned" and balanced(plan)
    assert {k: plan[k] for k in ("created", "updated", "merged", "rejected")} == \
        {k: real[k] for k in ("created", "updated", "merged", "rejected")}


def test_fill_empty_completes_the_survivor_and_deals_link_to_it(tmp_path, cli):
    project = make_project(tmp_path / "p", pipelines="contacts, deals")
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [
        ["К-1", "Смирнова Ольга Петровна", "", "O.Smirnova@Mail.ru", "01.02.2023 10:00:00"],
        ["К-2", "Смирнова О.П.", "8 (916) 123-45-67", "", "05.03.2023 11:00:00"],
        ["К-3", "Смирнова Ольга", "+7 916 1234567", "olga.s@ya.ru, o.smirnova@mail.ru", "07.03.2023 12:00:00"],
        ["К-4", "Смирнов Пётр Иванович", "8-916-123-45-67", "", "01.01.2024 9:00:00"],  # her husband, same phone
    ])
    write_csv(project / "data" / "deals.csv", ["Номер", "Название", "Клиент"],
              [["Д-1", "Продажа", "К-2"], ["Д-2", "Сервис", "К-3"], ["Д-3", "Запчасти", "К-4"]])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    done = finished(res.output)
    c = done["contacts"]
    assert (c["created"], c["updated"], c["merged"], c["rejected"]) == (2, 2, 2, 0)
    xw = crosswalk(project, "contacts")
    assert xw["К-1"] == xw["К-2"] == xw["К-3"] != xw["К-4"]
    with portal(project) as sb:
        olga = call(sb, "crm.contact.get", id=xw["К-1"])["result"]
        assert olga["NAME"] == "Ольга" and olga["SECOND_NAME"] == "Петровна"
        assert {p["VALUE"] for p in olga["PHONE"]} == {"+79161234567"}
        assert {e["VALUE"] for e in olga["EMAIL"]} == {"o.smirnova@mail.ru", "olga.s@ya.ru"}
        deals = {d["TITLE"]: d for d in call(sb, "crm.deal.list", select=["TITLE", "CONTACT_ID"])["result"]}
        assert deals["Продажа"]["CONTACT_ID"] == deals["Сервис"]["CONTACT_ID"] == xw["К-1"]
        assert deals["Запчасти"]["CONTACT_ID"] == xw["К-4"]


def test_a_later_file_joins_the_contact_already_loaded(tmp_path, cli):
    project = make_project(tmp_path / "p")
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [
        ["К-1", "Козлов Игорь Сергеевич", "89031112233", "", "01.02.2023 10:00:00"],
    ])
    first = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert first["created"] == 1
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [
        ["К-1", "Козлов Игорь Сергеевич", "89031112233", "", "01.02.2023 10:00:00"],
        ["К-77", "Козлов И.С.", "+7 (903) 111-22-33", "kozlov@firm.ru", "01.06.2024 10:00:00"],
    ])
    second = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert (second["created"], second["updated"], second["unchanged"], second["merged"]) == (0, 1, 1, 1)
    xw = crosswalk(project, "contacts")
    assert xw["К-77"] == xw["К-1"]
    with portal(project) as sb:
        assert call(sb, "crm.contact.list")["total"] == 1
        got = call(sb, "crm.contact.get", id=xw["К-1"])["result"]
        assert [e["VALUE"] for e in got["EMAIL"]] == ["kozlov@firm.ru"]  # filled in from the new copy
        assert got["NAME"] == "Игорь"


@pytest.mark.parametrize("policy, name, email", [
    ("first", "Анна", "anna.old@mail.ru"),
    ("newest", "Анастасия", "anna.new@mail.ru"),
])
def test_the_merge_policy_decides_whose_values_win(tmp_path, cli, policy, name, email):
    dedupe = f"  match: [[phone]]\n  policy: {policy}\n  newest_by: modified_at"
    project = make_project(tmp_path / "p", dedupe=dedupe)
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [
        ["К-1", "Орлова Анна Викторовна", "89261234500", "anna.old@mail.ru", "01.02.2020 10:00:00"],
        ["К-2", "Орлова Анастасия Викторовна", "+79261234500", "anna.new@mail.ru", "01.02.2024 10:00:00"],
    ])
    r = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert (r["created"], r["merged"]) == (1, 1)
    with portal(project) as sb:
        (only,) = call(sb, "crm.contact.list", select=["NAME", "EMAIL"])["result"]
        assert only["NAME"] == name and [e["VALUE"] for e in only["EMAIL"]] == [email]


def test_a_contact_already_in_the_portal_is_linked_not_created_again(tmp_path, cli):
    project = make_project(tmp_path / "p")
    (project / ".etl").mkdir()
    with portal(project) as sb:
        typed = call(sb, "crm.contact.add", fields={"NAME": "Вера", "LAST_NAME": "Зайцева",
                                                    "PHONE": [{"VALUE": "+7 903 555-44-33", "VALUE_TYPE": "WORK"}]})
        other = call(sb, "crm.contact.add", fields={"NAME": "Юрий", "LAST_NAME": "Зайцев",
                                                    "EMAIL": [{"VALUE": "home@zaitsev.ru", "VALUE_TYPE": "WORK"}]})
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [
        ["К-1", "Зайцева Вера Павловна", "89035554433", "vera@zaitseva.ru", "01.02.2023 10:00:00"],
        ["К-2", "Зайцева Вера", "", "home@zaitsev.ru", "01.02.2023 10:00:00"],  # the family e-mail: not Юрий
    ])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    r = finished(res.output)["contacts"]
    assert (r["created"], r["updated"], r["merged"]) == (1, 1, 1)  # К-2 is Вера, not Юрий: a contact of her own
    xw = crosswalk(project, "contacts")
    assert xw["К-1"] == str(typed["result"]) and xw["К-2"] not in (str(typed["result"]), str(other["result"]))
    with portal(project) as sb:
        assert call(sb, "crm.contact.list")["total"] == 3
        kept = call(sb, "crm.contact.get", id=typed["result"])["result"]
        assert "EMAIL" not in kept or not kept["EMAIL"]  # someone else's entity keeps its values
        assert call(sb, "crm.contact.get", id=other["result"])["result"]["NAME"] == "Юрий"
    rep = cli("dedupe", "report", "--json", "-C", project)
    groups = [json.loads(x) for x in rep.output.splitlines() if '"dedupe_group"' in x]
    assert groups[0]["foreign"] is True and groups[0]["target_id"] == str(typed["result"])
    assert "already in the target" in groups[0]["members"][0]["note"]


def test_companies_merge_by_inn_and_kpp_never_across_branches(tmp_path, cli):
    project = make_project(tmp_path / "p", pipelines="companies", target="warehouse")
    truth = write_duplicate_companies(project / "data" / "companies.csv", companies=200, seed=3)
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    r = finished(res.output)["companies"]
    assert balanced(r) and r["rejected"] == 0 and r["merged"] > 0
    scores = pair_scores(truth["company"], crosswalk(project, "companies"))
    print(f"\ndedupe on {truth['records']} generated companies ({truth['branches']} branches): precision "
          f"{scores['precision']:.3f}, recall {scores['recall']:.3f}")
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0
    with sqlite3.connect(project / ".etl" / "warehouse.db") as c:
        assert c.execute("SELECT count(*) FROM companies").fetchone()[0] == r["created"]


def test_validate_points_at_a_wrong_dedupe_block(tmp_path, cli):
    project = make_project(tmp_path / "p", dedupe="  match: [[phone], [e_mail]]\n  policy: newest")
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER, [["К-1", "А Б", "", "", ""]])
    res = cli("validate", "-C", project)
    assert res.exit_code == 2
    assert "contacts.yaml" in res.output and "dedupe.match[1][0]" in res.output and "'e_mail'" in res.output
    assert "email" in res.output  # the suggestion
    assert "newest_by" in res.output


def test_match_keys_read_phones_and_emails_as_people_type_them():
    rec = {"phone": "+79161234567;+74951234567;ext=12", "email": "A.B@Mail.RU; c@d.ru", "inn": " 7701234567 ",
           "kpp": "770101001"}
    assert match_keys(rec, [["phone"], ["email"], ["inn", "kpp"]]) == [
        "phone:+79161234567", "phone:+74951234567x12", "email:a.b@mail.ru", "email:c@d.ru",
        "inn+kpp:7701234567|770101001"]
    assert normal_phone("8 (916) 123-45-67") == normal_phone("9161234567") == "+79161234567"
    assert match_keys({"inn": "7701234567"}, [["inn", "kpp"]]) == []  # every field of a rule is needed
    long_a, long_b = "a" * 240 + "@x.ru", "a" * 239 + "b@x.ru"
    (ka,), (kb,) = match_keys({"email": long_a}, [["email"]]), match_keys({"email": long_b}, [["email"]])
    assert len(ka) <= 200 and len(kb) <= 200 and ka != kb  # fits the state store, still tells them apart


def test_a_group_the_target_refuses_sends_all_its_records_to_the_dead_letters(tmp_path, cli):
    dedupe = "  match: [[phone]]\n  policy: fill_empty\ntarget_options:\n  responsible: {unknown: reject}"
    project = make_project(tmp_path / "p", dedupe=dedupe)
    pf = project / "pipelines" / "contacts.yaml"
    pf.write_text(pf.read_text(encoding="utf-8").replace("  modified_at: Изменен", "  modified_at: Изменен\n"
                                                         "  responsible_name: Менеджер"), encoding="utf-8")
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER + ["Менеджер"], [
        ["К-1", "Титова Нина Ивановна", "89161110000", "", "01.02.2023 10:00:00", "Никто Никтоевич"],
        ["К-2", "Титова Н.И.", "+79161110000", "nina@t.ru", "01.03.2023 10:00:00", ""],
        ["К-3", "Лебедев Олег Олегович", "89162220000", "", "01.03.2023 10:00:00", ""],
    ])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 1, res.output  # 2 of 3 rejected: above max_reject_rate
    r = finished(res.output)["contacts"]
    assert balanced(r) and (r["created"], r["rejected"], r["merged"]) == (1, 2, 0)
    dl = cli("dlq", "list", "contacts", "--json", "-C", project)
    letters = {e["source_id"]: e for e in map(json.loads, dl.output.splitlines()) if e["event"] == "dead_letter"}
    assert set(letters) == {"К-1", "К-2"}
    assert "Никто Никтоевич" in letters["К-1"]["message"]
    assert "merged into a record the target did not take" in letters["К-2"]["message"]
    assert set(crosswalk(project, "contacts")) == {"К-3"}
    # the next run, with the manager fixed, loads the pair as one contact
    write_csv(project / "data" / "contacts.csv", CONTACT_HEADER + ["Менеджер"], [
        ["К-1", "Титова Нина Ивановна", "89161110000", "", "01.02.2023 10:00:00", ""],
        ["К-2", "Титова Н.И.", "+79161110000", "nina@t.ru", "01.03.2023 10:00:00", ""],
        ["К-3", "Лебедев Олег Олегович", "89162220000", "", "01.03.2023 10:00:00", ""],
    ])
    again = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert (again["created"], again["updated"], again["unchanged"], again["merged"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("server", ["pg_url", "maria_url"])
def test_dedupe_keeps_its_state_on_postgresql_and_mariadb(tmp_path, cli, request, monkeypatch, server):
    monkeypatch.setenv("ETL_STATE_URL", request.getfixturevalue(server))
    project = make_project(tmp_path / "p", batch=40)
    truth = write_duplicate_contacts(project / "data" / "contacts.csv", people=120, seed=21)
    first = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert balanced(first) and first["merged"] > 0 and first["rejected"] == 0
    again = finished(cli("run", "--json", "-C", project).output)["contacts"]
    assert again["unchanged"] == truth["records"]
    rep = cli("dedupe", "report", "--json", "-C", project)
    summary = next(json.loads(x) for x in rep.output.splitlines() if '"dedupe_summary"' in x)
    assert summary["merged"] == first["merged"]


def test_a_kill_between_the_write_and_the_commit_merges_as_a_run_without_one(tmp_path):
    """kill -9 right after the portal took batch 3 and before the state store knew: the rerun adopts what is
    there, and ends with the same contacts and the same groups as a run nobody killed."""
    import shutil
    import signal

    from tests.test_resume_after_kill import _output, _spawn

    runs = {}
    for name in ("killed", "clean"):
        project = make_project(tmp_path / name, batch=40)
        if name == "killed":
            write_duplicate_contacts(project / "data" / "contacts.csv", people=150, seed=9)
        else:
            shutil.copy(tmp_path / "killed" / "data" / "contacts.csv", project / "data" / "contacts.csv")
        runs[name] = project
    proc = _spawn(runs["killed"], "run", "--quiet", ETLTEST_KILL_IN_COMMIT="contacts:3")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, _output(proc)
    for name in ("killed", "clean"):
        proc = _spawn(runs[name], "run", "--quiet")
        proc.wait(timeout=120)
        assert proc.returncode == 0, _output(proc)

    def groups(project: Path) -> set[frozenset]:
        by: dict[str, set] = {}
        for sid, tid in crosswalk(project, "contacts").items():
            by.setdefault(tid, set()).add(sid)
        return {frozenset(g) for g in by.values()}

    assert groups(runs["killed"]) == groups(runs["clean"])
    for project in runs.values():
        with portal(project) as sb:
            rows = call(sb, "crm.contact.list", select=["ORIGIN_ID"], start=-1, order={"ID": "ASC"})["result"]
            keys = [r["ORIGIN_ID"] for r in rows]
            more = rows
            while len(more) == 50:
                more = call(sb, "crm.contact.list", select=["ORIGIN_ID"], start=-1,
                            filter={">ID": more[-1]["ID"]}, order={"ID": "ASC"})["result"]
                keys += [r["ORIGIN_ID"] for r in more]
            assert len(keys) == len(set(keys)) == len(groups(project))  # one contact per group, none twice
