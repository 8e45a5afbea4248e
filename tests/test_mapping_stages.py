"""Filters, stages and the mapping constructor, driven through `etl run` on a small hand-made 1C export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

PROJECT = """\
version: 1
name: t
defaults: {batch_size: 3, max_reject_rate: 1.0}
targets:
  db: {type: sql, url: "sqlite:///.etl/out.db"}
target: db
pipelines: [deals]
"""

DEALS = """\
entity: deal
source:
  type: onec_flat
  files: deals.csv
  types: {Сумма: number, Дата: datetime, Закрыта: boolean}
key: [Направление, Номер]
filter:
  - {column: Удалена, not_equals: Да}
stages:
  - {type: required, columns: [Менеджер]}
  - {type: replace, columns: [Название], pattern: "\\\\s+", with: " "}
  - {type: case, columns: [Валюта], to: upper}
mapping:
  title: Название
  direction: {column: Направление, map: {Продажа: SALE, Сервис: SERVICE}}
  stage: {column: Стадия, map: {Новая: NEW, Выиграна: WON}, default: OTHER}
  amount: Сумма
  currency: {column: Валюта, default: RUB}
  opened_at: Дата
  is_closed: Закрыта
  responsible_name: {template: "{Менеджер} ({Отдел})"}
  comments: {concat: [Комментарий, Примечание], sep: " / "}
  modified_at: Дата
"""

ROWS = [
    "Номер;Направление;Название;Стадия;Сумма;Валюта;Дата;Закрыта;Менеджер;Отдел;Комментарий;Примечание;Удалена",
    "1;Продажа;Kia   Rio  2021;Новая;1 250 000,50;rub;05.03.2021 9:07:00;Нет;Петров П.П.;Продажи;звонил;;Нет",
    "1;Сервис;ТО-2;Выиграна;12 500;;06.03.2021 10:00:00;Да;Сидоров С.С.;Сервис;;после ДТП;Нет",
    "2;Продажа;Hyundai Solaris;Думает;990 000;RUB;07.03.2021 11:30:00;Нет;Петров П.П.;Продажи;а;б;Нет",
    "3;Лизинг;Camry;Новая;3 100 000;RUB;08.03.2021 12:00:00;Нет;Петров П.П.;Продажи;;;Нет",
    "4;Продажа;Без менеджера;Новая;1;RUB;09.03.2021 12:00:00;Нет;;Продажи;;;Нет",
    "5;Продажа;Удалённая;Новая;1;RUB;09.03.2021 12:00:00;Нет;Петров П.П.;Продажи;;;Да",
    "6;Продажа;Кривая сумма;Новая;12,3,4;RUB;09.03.2021 12:00:00;Нет;Петров П.П.;Продажи;;;Нет",
    ";Продажа;Без номера;Новая;1;RUB;09.03.2021 12:00:00;Нет;Петров П.П.;Продажи;;;Нет",
]


@pytest.fixture
def deals_project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines.yaml").write_text(PROJECT, encoding="utf-8")
    (tmp_path / "pipelines" / "deals.yaml").write_text(DEALS, encoding="utf-8")
    (tmp_path / "deals.csv").write_bytes("\r\n".join(ROWS).encode("cp1251") + b"\r\n")
    return tmp_path


def rows(project: Path) -> dict[str, dict]:
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'out.db'}")
    with eng.connect() as c:
        out = {r["source_id"]: dict(r) for r in c.execute(sa.text("SELECT * FROM deals")).mappings()}
    eng.dispose()
    return out


def events(output: str) -> list[dict]:
    return [json.loads(x) for x in output.splitlines() if x.startswith("{")]


def test_mapping_constructor_end_to_end(deals_project, cli):
    res = cli("run", "--json", "-C", deals_project)
    assert res.exit_code == 0, res.output
    got = rows(deals_project)
    assert set(got) == {"Продажа|1", "Сервис|1", "Продажа|2"}  # a composite key keeps both number-1 deals
    kia = got["Продажа|1"]
    assert kia["title"] == "Kia Rio 2021"  # replace stage squeezed the spaces
    assert kia["direction"] == "SALE" and kia["stage"] == "NEW"
    assert kia["amount"] == pytest.approx(1250000.5)
    assert kia["currency"] == "RUB"  # case stage
    assert kia["responsible_name"] == "Петров П.П. (Продажи)"  # template
    assert kia["comments"] == "звонил"  # concat leaves an empty part out, no dangling separator
    assert str(kia["opened_at"]).startswith("2021-03-05 09:07:00")
    assert kia["is_closed"] in (0, False)
    service = got["Сервис|1"]
    assert service["currency"] == "RUB"  # empty -> default
    assert service["comments"] == "после ДТП" and service["is_closed"] in (1, True)
    assert got["Продажа|2"]["stage"] == "OTHER"  # value map default
    assert got["Продажа|2"]["comments"] == "а / б"


def test_every_record_that_did_not_load_has_a_reason(deals_project, cli):
    res = cli("run", "--json", "-C", deals_project)
    fin = next(e for e in events(res.output) if e["event"] == "pipeline_finished")
    assert fin["read"] == 8 and fin["created"] == 3 and fin["rejected"] == 5
    assert fin["reasons"] == {"unmapped_value": 1, "missing_value": 1, "filtered": 1, "bad_number": 1,
                              "missing_key": 1}
    res = cli("dlq", "list", "--json", "--limit", "100", "-C", deals_project)
    letters = {e["reason"]: e for e in events(res.output) if e["event"] == "dead_letter"}
    assert letters["unmapped_value"]["value"] == "Лизинг" and letters["unmapped_value"]["field"] == "Направление"
    assert letters["unmapped_value"]["message"].startswith("deals.csv, line 5: ")
    assert letters["missing_value"]["field"] == "Менеджер" and letters["missing_value"]["line"] == 6
    assert letters["filtered"]["stage"] == "filter"
    assert letters["bad_number"]["value"] == "12,3,4" and letters["bad_number"]["field"] == "Сумма"
    assert letters["missing_key"]["line"] == 9


def test_filtered_records_do_not_count_against_the_threshold(deals_project, cli):
    f = deals_project / "pipelines.yaml"
    # 5 of 8 rejected, 1 of them filtered: 4/8 = 0.5 counts against the threshold
    f.write_text(PROJECT.replace("max_reject_rate: 1.0", "max_reject_rate: 0.55"), encoding="utf-8")
    assert cli("run", "-C", deals_project, "--quiet").exit_code == 0
    f.write_text(PROJECT.replace("max_reject_rate: 1.0", "max_reject_rate: 0.45"), encoding="utf-8")
    assert cli("run", "--restart", "-C", deals_project, "--quiet").exit_code == 1


def test_a_changed_map_is_an_update_of_the_changed_records_only(deals_project, cli):
    assert cli("run", "-C", deals_project).exit_code == 0
    f = deals_project / "pipelines" / "deals.yaml"
    f.write_text(DEALS.replace("Выиграна: WON", "Выиграна: C1:WON"), encoding="utf-8")
    res = cli("run", "--json", "-C", deals_project)
    fin = next(e for e in events(res.output) if e["event"] == "pipeline_finished")
    assert fin["updated"] == 1 and fin["unchanged"] == 2 and fin["created"] == 0
    assert rows(deals_project)["Сервис|1"]["stage"] == "C1:WON"


def test_a_yaml_boolean_in_a_filter_matches_a_boolean_column(deals_project, cli):
    f = deals_project / "pipelines" / "deals.yaml"
    f.write_text(DEALS.replace("  - {column: Удалена, not_equals: Да}", "  - {column: Закрыта, equals: false}"),
                 encoding="utf-8")
    res = cli("run", "--json", "-C", deals_project)
    fin = next(e for e in events(res.output) if e["event"] == "pipeline_finished")
    assert fin["reasons"].get("filtered") == 1  # only the closed service deal is left out
    assert "Сервис|1" not in rows(deals_project) and "Продажа|1" in rows(deals_project)


def test_sub_second_timestamps_are_truncated_to_the_fields_seconds():
    import datetime as dt

    import pyarrow as pa

    from etl.mapping import cast_column

    arr = pa.chunked_array([pa.array([dt.datetime(2024, 5, 1, 10, 0, 0, 999_999), None], pa.timestamp("us"))])
    out, bad = cast_column(arr, pa.timestamp("s"))
    assert bad is None and out.to_pylist() == [dt.datetime(2024, 5, 1, 10, 0, 0), None]
