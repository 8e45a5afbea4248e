"""A migration engineer cleans the service sites' addresses through DaData: `etl run` on the sample project with a
dadata_address stage and `dadata.base_url` pointing at the local fake. The warehouse gets the standardised address,
its parts, FIAS id and coordinates; garbage goes to the dead letters with its reason; the second run pays nothing;
a spent balance or a missing secret stops the run with a message that names the fix and never the key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.dadata import normalise_one
from etl import exitcodes
from tests.fakes import FakeDadata

GARBAGE = [  # rows a person typed into 1C without an address worth the name; no owner (links are optional)
    ("ОБ-900001", "Склад у реки", "Склад", "н/д"),
    ("ОБ-900002", "Гараж в кооперативе", "Гараж", "адрес уточнить у клиента"),
]
PLACEHOLDER = ("ОБ-900003", "Дача", "Дача", "-")  # nothing but punctuation: empty, never sent (kept, marked)
UNSURE = ("ОБ-900004", "Квартира Петровых", "Квартира", "Москва")  # DaData: qc=1, too little data -> review

SITES = """\
entity: site
source:
  use: onec
  files: sites.csv
  types:
    ДатаСоздания: datetime
key: Код
stages:
  - type: dadata_address
    column: Адрес
    into: {{address: Адрес_DaData, region: Регион, city: Город, street: Улица, house: Дом, flat: Квартира,
           postal_code: Индекс, fias_id: ФИАС, geo_lat: Широта, geo_lon: Долгота, qc: qc, qc_geo: qc_geo}}
    status_column: Проверка_адреса
    qc_policy: {{accept: [0], review: [1, 3], reject: [2]}}
    {extra}
mapping:
  title: Наименование
  site_type: ТипОбъекта
  address_raw: Адрес
  address: Адрес_DaData
  region: Регион
  city: Город
  street: Улица
  house: Дом
  flat: Квартира
  postal_code: Индекс
  fias_id: ФИАС
  geo_lat: Широта
  geo_lon: Долгота
  comments: Проверка_адреса
  contact_persons: КонтактныеЛица
  responsible_name: Ответственный
  created_at: ДатаСоздания
links:
  company: {{pipeline: companies, column: КодКонтрагента}}
  contact: {{pipeline: contacts, column: КодКонтакта}}
"""


@pytest.fixture
def fake():
    with FakeDadata(rps=1000) as f:
        yield f


def setup_project(project: Path, fake: FakeDadata, extra: str = "budget: 1000", secret: bool = True) -> Path:
    env = f"DADATA_API_KEY={fake.api_key}\nDADATA_URL={fake.url}\n"
    if secret:
        env += f"DADATA_SECRET={fake.secret}\n"
    (project / ".env").write_text(env, encoding="utf-8")
    with open(project / "pipelines.yaml", "a", encoding="utf-8") as f:
        f.write("dadata:\n  api_key: ${DADATA_API_KEY}\n  secret: ${DADATA_SECRET:-}\n  base_url: ${DADATA_URL}\n"
                "  requests_per_second: 1000\n  retry_wait: 0.01\n")
    (project / "pipelines" / "sites.yaml").write_text(SITES.format(extra=extra), encoding="utf-8")
    with open(project / "data" / "sites.csv", "ab") as f:
        for code, title, kind, address in GARBAGE + [PLACEHOLDER, UNSURE]:
            f.write(f"{code};{title};{kind};{address};;;;;01.02.2020 10:00:00\r\n".encode("cp1251"))
    return project


def site_addresses(project: Path) -> list[str]:
    """The addresses of the rows the source reads (a row with a bad date is rejected by the source: never sent)."""
    truth = json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))
    bad_rows = {b["row"] for b in truth["files"]["sites"]["bad_values"]}
    with open(project / "data" / "sites.csv", encoding="cp1251", newline="") as f:
        return [r["Адрес"] for i, r in enumerate(csv.DictReader(f, delimiter=";"), 1) if i not in bad_rows]


def events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def finished(output: str) -> dict[str, dict]:
    return {e["pipeline"]: e for e in events(output) if e["event"] == "pipeline_finished"}


def infos(output: str) -> list[str]:
    return [e["message"] for e in events(output) if e["event"] == "info"]


def warehouse_sites(project: Path) -> dict[str, dict]:
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        out = {r["source_id"]: dict(r) for r in c.execute(sa.text("SELECT * FROM sites")).mappings()}
    eng.dispose()
    return out


def test_sites_are_loaded_with_cleaned_addresses_and_the_second_run_pays_nothing(project, fake, cli):
    setup_project(project, fake)
    truth = json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    first_run = res.output
    report = finished(first_run)["sites"]
    assert report["status"] == "ok"

    # one paid request per distinct address the source read: duplicates and rows rejected later for their links
    # included (the stage runs before links are resolved), and nothing twice
    distinct = {normalise_one(a) for a in site_addresses(project)} - {None}
    assert fake.billed == fake.requests == len(distinct) and len(set(fake.sources)) == len(fake.sources)

    # the warehouse rows carry DaData's answer, equal to the generator's ground truth
    loaded = warehouse_sites(project)
    expected = truth["expected"]["sites"]
    assert len(loaded) == expected["accepted"] + 2  # the sample's accepted sites + the unsure one + the empty one
    checked = 0
    for key, t in truth["sites"].items():
        row = loaded.get(key)
        if row is None:
            continue  # rejected by the sample's own rules (orphan link, bad date)
        assert (row["address_raw"], row["address"], row["region"], row["city"], row["street"], row["house"],
                row["flat"]) == (t["address_raw"].strip(), t["address"], t["region"], t["city"], t["street"], t["house"],
                                 t["flat"]), key
        assert row["comments"] == "ok" and len(row["postal_code"]) == 6 and row["fias_id"]
        assert isinstance(row["geo_lat"], float) and isinstance(row["geo_lon"], float)
        checked += 1
    assert checked == expected["accepted"]
    unsure = loaded[UNSURE[0]]
    assert (unsure["comments"], unsure["address"], unsure["city"], unsure["street"]) == \
        ("review", "г Москва", "Москва", None)
    empty = loaded[PLACEHOLDER[0]]
    assert (empty["comments"], empty["address_raw"], empty["address"]) == ("empty", "-", None)

    # garbage went to the dead letters with its reason, the address and DaData's verdict
    res = cli("dlq", "list", "sites", "--reason", "dadata_qc", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    letters = [e for e in events(res.output) if e["event"] == "dead_letter"]
    assert sorted(d["source_id"] for d in letters) == [g[0] for g in GARBAGE]
    for d in letters:
        assert d["stage"] == "dadata_address" and d["field"] == "Адрес" and "qc=2 (empty or garbage)" in d["message"]
        assert "sites.csv, line" in d["message"]
    assert report["reasons"]["dadata_qc"] == len(GARBAGE)
    assert any(f"sites: dadata_address (Адрес): {len(distinct)} distinct addresses, 0 from the cache, "
               f"{len(distinct)} sent, {len(distinct)} paid (budget 1000)" in m for m in infos(first_run))

    # the second run: every answer from the cache, zero requests, nothing changed in the target
    sent = fake.requests
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    assert fake.requests == sent
    again = finished(res.output)["sites"]
    assert again["created"] == again["updated"] == 0 and again["unchanged"] == report["created"]
    assert any(f"{len(distinct)} from the cache, 0 sent, 0 paid" in m for m in infos(res.output))


def test_a_dry_run_spends_nothing_and_says_how_many_requests_a_run_would_send(project, fake, cli):
    setup_project(project, fake)
    res = cli("run", "--dry-run", "--json", "-C", project)
    assert res.exit_code in (exitcodes.OK, exitcodes.QUALITY), res.output
    assert fake.requests == 0
    distinct = {normalise_one(a) for a in site_addresses(project)} - {None}
    assert any(f"dry run: would send {len(distinct)} request(s) (budget 1000)" in m for m in infos(res.output))
    assert not (project / ".etl" / "warehouse.db").exists() or "sites" not in sa.inspect(
        sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")).get_table_names()


def test_the_budget_caps_what_one_run_pays_and_the_next_run_goes_on(project, fake, cli):
    setup_project(project, fake, "budget: 10\n    on_budget: reject")
    res = cli("run", "--json", "sites", "-C", project)
    # most sites are rejected for the budget (above the sample's 20% threshold: exit code 1), none is lost
    assert res.exit_code == exitcodes.QUALITY, res.output
    report = finished(res.output)["sites"]
    assert fake.billed == 10
    assert report["reasons"]["dadata_budget"] > 0
    assert report["read"] == report["created"] + report["rejected"]
    res = cli("dlq", "list", "sites", "--reason", "dadata_budget", "--limit", "1", "--json", "-C", project)
    (letter,) = [e for e in events(res.output) if e["event"] == "dead_letter"]
    assert "budget (10 paid requests) is spent" in letter["message"]
    # the next run pays for ten more, never for one already paid
    res = cli("run", "--json", "sites", "-C", project)
    assert fake.billed == 20 and len(set(fake.sources)) == 20


def test_an_empty_balance_stops_the_run_with_a_clear_message_and_the_key_masked(project, cli):
    with FakeDadata(rps=1000, balance=0) as fake:
        setup_project(project, fake)
        res = cli("run", "--json", "sites", "-C", project)
        assert res.exit_code == exitcodes.RUNTIME, res.output
    report = finished(res.output)["sites"]
    assert report["status"] == "failed"
    assert "403 Forbidden" in report["message"] and "balance is empty" in report["message"]
    assert "Feature 'CLEAN' disabled for token ***" in report["message"]
    assert fake.api_key not in res.output and fake.secret not in res.output
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'state.db'}")
    with eng.connect() as c:
        stored = " ".join(str(m) for (m,) in c.execute(sa.text("SELECT message FROM etl_runs")))
    eng.dispose()
    assert "balance is empty" in stored and fake.api_key not in stored


def test_a_missing_secret_is_named_and_the_key_is_never_printed(project, fake, cli):
    setup_project(project, fake, secret=False)
    res = cli("run", "sites", "-C", project)
    assert res.exit_code == exitcodes.RUNTIME
    assert "401" in res.output and "dadata.secret" in res.output
    assert fake.api_key not in res.output
    assert fake.requests == 1  # a 401 is not retried


def test_validate_knows_the_columns_the_stage_writes(project, fake, cli):
    setup_project(project, fake)
    res = cli("validate", "-C", project)  # the mapping names Адрес_DaData, Регион, ...: the stage's outputs
    assert res.exit_code == exitcodes.OK, res.output
    assert fake.requests == 0  # validating costs nothing


def test_validate_checks_the_stage_options(project, fake, cli):
    setup_project(project, fake, "qc_geo_policy: {accept: [0, 1], reject: [9]}")
    res = cli("validate", "--offline", "-C", project)
    assert res.exit_code == exitcodes.CONFIG
    assert "pipelines/sites.yaml:9: stages[0]:" in res.output and "9 is not a DaData code (0..6)" in res.output
