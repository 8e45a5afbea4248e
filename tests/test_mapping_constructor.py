"""The mapping constructor: dates and numbers given as text, lookups (the responsible user by name), conditions,
all declared in a pipeline's YAML, driven through `etl run` / `etl validate` on small hand-made 1C exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

PROJECT = """\
version: 1
name: t
defaults: {batch_size: 4, max_reject_rate: 1.0}
targets:
  db: {type: sql, url: "sqlite:///.etl/out.db"}
target: db
pipelines: [deals]
"""

MANAGERS = ["Логин;ФИО;ЭлПочта", "petrov.i;Петров Иван Сергеевич;i.petrov@x.example",
            "sidorova.a;Сидорова Анна Павловна;a.sidorova@x.example"]


def make_project(tmp_path: Path, pipeline: str, rows: list[str]) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines.yaml").write_text(PROJECT, encoding="utf-8")
    (tmp_path / "pipelines" / "deals.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "deals.csv").write_bytes("\r\n".join(rows).encode("cp1251") + b"\r\n")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "managers.csv").write_bytes("\r\n".join(MANAGERS).encode("cp1251") + b"\r\n")
    return tmp_path


def loaded(project: Path, table: str = "deals", db: str = "out.db") -> dict[str, dict]:
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / db}")
    with eng.connect() as c:
        out = {r["source_id"]: dict(r) for r in c.execute(sa.text(f"SELECT * FROM {table}")).mappings()}
    eng.dispose()
    return out


def events(output: str) -> list[dict]:
    return [json.loads(x) for x in output.splitlines() if x.startswith("{")]


def finished(output: str) -> dict:
    return next(e for e in events(output) if e["event"] == "pipeline_finished")


def dead_letters(cli, project: Path) -> list[dict]:
    res = cli("dlq", "list", "--json", "--limit", "100", "-C", project)
    return [e for e in events(res.output) if e["event"] == "dead_letter"]


# --- dates and numbers given as text ----------------------------------------------------------------------------

FORMATS = """\
entity: deal
source: {type: onec_flat, files: deals.csv}
key: Номер
mapping:
  title: Название
  opened_at: {column: Открыта, date: {format: ["%d/%m/%Y", "%Y-%m-%d %H:%M"]}}
  closed_at: {column: Закрыта, date: {format: "%d/%m/%Y"}}
  amount: {column: Сумма, number: {decimal: ",", thousands: " "}}
"""


def test_dates_and_numbers_in_the_formats_the_export_uses(tmp_path, cli):
    project = make_project(tmp_path, FORMATS, [
        "Номер;Название;Открыта;Закрыта;Сумма",
        "1;Kia;05/03/2021;;1 250 000,50",
        "2;Camry;2021-03-07 14:30;09/03/2021;-990 000",
        "3;Solaris;31/02/2021;;1 000",
        "4;Rio;06.03.2021;;1 000",
        "5;Polo;07/03/2021;;12,3,4",
        "6;Golf;07/03/2021;;1.5",
        "7;Octavia;;;",
    ])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    fin = finished(res.output)
    assert fin["created"] == 3 and fin["reasons"] == {"bad_date": 2, "bad_number": 2}
    got = loaded(project)
    assert str(got["1"]["opened_at"]).startswith("2021-03-05 00:00:00")
    assert got["1"]["amount"] == pytest.approx(1250000.5)
    assert str(got["2"]["opened_at"]).startswith("2021-03-07 14:30:00")  # the second format
    assert str(got["2"]["closed_at"]).startswith("2021-03-09")
    assert got["2"]["amount"] == pytest.approx(-990000)
    assert got["7"]["opened_at"] is None and got["7"]["amount"] is None  # empty is no error
    letters = {(e["reason"], e["value"]): e for e in dead_letters(cli, project)}
    assert set(letters) == {("bad_date", "31/02/2021"), ("bad_date", "06.03.2021"), ("bad_number", "12,3,4"),
                            ("bad_number", "1.5")}
    feb = letters[("bad_date", "31/02/2021")]
    assert feb["field"] == "Открыта" and feb["line"] == 4
    assert feb["message"].startswith("deals.csv, line 4: value '31/02/2021' of column «Открыта» is not a date")
    assert "'opened_at'" in feb["message"]
    assert letters[("bad_number", "1.5")]["field"] == "Сумма"
    assert "'amount'" in letters[("bad_number", "1.5")]["message"]


# --- lookups --------------------------------------------------------------------------------------------------

LOOKUP = """\
entity: deal
source: {type: onec_flat, files: deals.csv}
key: Номер
mapping:
  title: Название
  responsible_name:
    column: Менеджер
    lookup: {file: ref/managers.csv, key: ФИО, value: Логин, normalise: name}
  comments:
    column: Менеджер
    lookup: {file: ref/managers.csv, key: ФИО, value: ЭлПочта, normalise: lower, default: nobody@x.example}
"""


def test_the_responsible_user_is_looked_up_by_name_in_any_spelling(tmp_path, cli):
    project = make_project(tmp_path, LOOKUP, [
        "Номер;Название;Менеджер",
        "1;Kia;Петров Иван Сергеевич",
        "2;Camry;ПЕТРОВ ИВАН СЕРГЕЕВИЧ",
        "3;Rio;Петров И.С.",
        "4;Polo;Анна Сидорова",
        "5;Golf;сидорова  анна павловна",
        "6;Jetta;Иванов Пётр",
        "7;Octavia;",
    ])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    assert finished(res.output)["reasons"] == {"unmatched_lookup": 1}
    got = loaded(project)
    assert {k: v["responsible_name"] for k, v in got.items()} == {
        "1": "petrov.i", "2": "petrov.i", "3": "petrov.i", "4": "sidorova.a", "5": "sidorova.a", "7": None}
    # normalise: lower matches case and spacing only; the rest takes the default
    assert got["2"]["comments"] == "i.petrov@x.example" and got["5"]["comments"] == "a.sidorova@x.example"
    assert got["3"]["comments"] == "nobody@x.example" and got["7"]["comments"] is None
    (letter,) = dead_letters(cli, project)
    assert letter["reason"] == "unmatched_lookup" and letter["value"] == "Иванов Пётр"
    assert letter["field"] == "Менеджер" and letter["line"] == 7
    assert "no match in column «ФИО» of ref/managers.csv" in letter["message"]


def test_initials_shared_by_two_people_match_neither(tmp_path, cli):
    from etl.config import LookupSpec
    from etl.mapping import LookupTable

    (tmp_path / "m.csv").write_bytes("Логин;ФИО\r\na;Петров Иван Сергеевич\r\nb;Петров Илья Семёнович\r\n"
                                     .encode("cp1251"))
    lk = LookupTable(LookupSpec(file="m.csv", key="ФИО", value="Логин", normalise="name"), tmp_path)
    assert lk.get("Петров И.С.") is None and lk.get("Петров И.") is None
    assert lk.get("илья петров") == "b" and lk.get("ПЕТРОВ ИЛЬЯ СЕМЕНОВИЧ") == "b"


# --- conditions -----------------------------------------------------------------------------------------------

CASES = """\
entity: deal
source: {type: onec_flat, files: deals.csv}
key: Номер
mapping:
  title: Название
  stage:
    cases:
      - {when: {column: Закрыта, equals: Да}, const: WON}
      - {when: {column: Отказ, not_empty: true}, const: LOSE}
      - {when: {column: Стадия, in: [Новая, Переговоры]}, column: Стадия}
    map: {WON: WON, LOSE: LOSE, Новая: NEW, Переговоры: PREPARATION}
  comments:
    cases:
      - {when: {column: Отказ, matches: "(?i)^дорого"}, template: "Отказ по цене: {Отказ}"}
      - {when: {column: Отказ, not_empty: true}, column: Отказ}
    default: "-"
"""


def test_conditions_choose_between_alternatives(tmp_path, cli):
    project = make_project(tmp_path, CASES, [
        "Номер;Название;Стадия;Закрыта;Отказ",
        "1;Kia;Новая;Нет;",
        "2;Camry;Переговоры;Да;",
        "3;Rio;Переговоры;Нет;Дорого",
        "4;Polo;Переговоры;Нет;",
        "5;Golf;Думает;Нет;",
        "6;Jetta;Думает;Нет;Купил у конкурентов",
    ])
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    got = loaded(project)
    assert {k: v["stage"] for k, v in got.items()} == {
        "1": "NEW", "2": "WON", "3": "LOSE", "4": "PREPARATION", "5": None, "6": "LOSE"}  # 5: no case holds
    assert got["3"]["comments"] == "Отказ по цене: Дорого" and got["6"]["comments"] == "Купил у конкурентов"
    assert got["1"]["comments"] == "-"
    assert finished(res.output)["reasons"] == {}


def test_a_value_made_by_conditions_that_the_map_lacks_is_a_reject(tmp_path, cli):
    pipeline = CASES.replace("Новая: NEW, ", "")
    project = make_project(tmp_path, pipeline, ["Номер;Название;Стадия;Закрыта;Отказ", "1;Kia;Новая;Нет;",
                                                "2;Camry;Переговоры;Да;"])
    res = cli("run", "--json", "-C", project)
    assert finished(res.output)["reasons"] == {"unmapped_value": 1}
    (letter,) = dead_letters(cli, project)
    assert letter["field"] == "stage" and letter["value"] == "Новая" and letter["line"] == 2
    assert "value 'Новая' of field 'stage' has no entry in its map" in letter["message"]


# --- etl validate ---------------------------------------------------------------------------------------------

BAD = """\
entity: deal
source: {type: onec_flat, files: deals.csv}
key: Номер
mapping:
  title: Название
  opened_at:
    column: Открыта
    date: {format: "%d/%Q/%Y"}
    number: {decimal: ","}
  amount: {column: Сумма, number: {decimal: ",", thousands: ","}}
  responsible_name:
    column: Менеджер
    lookup: {file: ref/managers.csv, key: Фио, value: Логин, normalise: name}
  comments:
    column: Менеджер
    lookup: {file: ref/nobody.csv, key: ФИО, value: Логин}
  stage:
    cases:
      - {when: {column: Стадя, equals: Да}, const: WON, column: Стадия}
"""


def test_validate_names_file_line_and_key_of_every_mistake(tmp_path, cli):
    project = make_project(tmp_path, BAD, ["Номер;Название;Открыта;Сумма;Менеджер;Стадия", "1;a;;;;"])
    res = cli("validate", "-C", project)
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    f = "pipelines/deals.yaml"
    for line, path, text in [
        (8, "mapping.opened_at.date", "give at most one of date, number"),
        (8, "mapping.opened_at.date.format", "bad date format '%d/%Q/%Y': unknown directive %Q"),
        (10, "mapping.amount.number.thousands", "the thousands separator ',' is the decimal mark too"),
        (13, "mapping.responsible_name.lookup.key", "lookup file 'ref/managers.csv' has no column 'Фио'"),
        (16, "mapping.comments.lookup.file", "lookup file 'ref/nobody.csv' not found"),
        (19, "mapping.stage.cases[0]", "give exactly one of column, const, template in each case (got column, const)"),
    ]:
        assert f"{line}: {path}: {text}" in out, (path, out)
    assert "did you mean 'ФИО'" in out


def test_validate_checks_the_columns_conditions_use(tmp_path, cli):
    pipeline = BAD.split("  opened_at:")[0] + """\
  stage:
    cases:
      - {when: {column: Стадя, equals: Да}, const: WON}
"""
    project = make_project(tmp_path, pipeline, ["Номер;Название;Стадия", "1;a;"])
    res = cli("validate", "-C", project)
    assert res.exit_code == 2, res.output
    assert "mapping.stage.cases[0].when.column: source has no column 'Стадя'" in " ".join(res.output.split())
    (project / "pipelines" / "deals.yaml").write_text(pipeline.replace("Стадя", "Стадия"), encoding="utf-8")
    assert cli("validate", "-C", project).exit_code == 0


# --- the sample project ---------------------------------------------------------------------------------------


def test_sample_responsible_names_all_resolve_to_logins(project, cli):
    truth = json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))
    login_of = {v.strip(): m["login"] for m in truth["managers"] for v in m["variants"]}
    f = project / "pipelines" / "companies.yaml"
    text = f.read_text(encoding="utf-8")
    assert "  responsible_name: Ответственный\n" in text
    f.write_text(text.replace("  responsible_name: Ответственный\n", """\
  responsible_name:
    column: Ответственный
    lookup: {file: data/managers.csv, key: ФИО, value: Логин, normalise: name}
""") + "target: warehouse\n", encoding="utf-8")
    assert cli("validate", "-C", project).exit_code == 0
    res = cli("run", "companies", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    assert "unmatched_lookup" not in finished(res.output)["reasons"]
    with open(project / "data" / "companies.csv", encoding="cp1251", newline="") as fh:
        source = {r[0]: r[14].strip() for r in list(csv.reader(fh, delimiter=";"))[1:] if r}
    got = loaded(project, "companies", "warehouse.db")
    named = {k: v for k, v in got.items() if source.get(k)}
    assert len(named) > 50
    spellings = {source[k] for k in named}
    assert len(spellings) > len(truth["managers"])  # the export really spells them in several ways
    assert {k: v["responsible_name"] for k, v in named.items()} == {k: login_of[source[k]] for k in named}
