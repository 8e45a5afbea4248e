"""A migration engineer reads 1C's own database (no export at all): the catalog of counterparties and their contact
persons, stored the way 1C stores them — _Reference42 / _Fld1234 tables, binary(16) references, booleans as
binary(1) (MS SQL layout, here on MariaDB) or boolean (PostgreSQL layout, lower-case names), dates + 2000 years —
and gets rows with readable names, 1C's textual GUIDs, real dates and booleans, ready to map onto companies and
contacts.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime
from decimal import Decimal
from urllib.parse import quote_plus

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.base import TerminalError
from connectors.onec.db import OnecDbSource, idrref_to_uuid, refs_to_guids, shift_years, uuid_to_idrref
from tests.test_sql_source import odbc_drivers, pg_odbc_connect

ZERO = bytes(16)
COMPANY_FIELDS = {"ИНН": "_Fld1234", "ДатаРегистрации": "_Fld1235", "Выручка": "_Fld1236", "Активен": "_Fld1237"}
CONTACT_FIELDS = {"Телефон": "_Fld501", "ДатаРождения": "_Fld502"}


# ------------------------------------------------------------------------------------------ a 1C base

class Base:
    """Builds a small 1C base in the layout of one DBMS and remembers what it put there."""

    def __init__(self, url: str, *, offset: int = 2000, seed: int = 1):
        self.url = url
        self.eng = sa.create_engine(url)
        self.pg = self.eng.dialect.name == "postgresql"
        self.offset = offset
        self.rng = random.Random(seed)
        self.companies: list[dict] = []
        self.contacts: list[dict] = []
        self.groups: list[dict] = []

    # names as 1C gives them: lower case on PostgreSQL
    def n(self, name: str) -> str:
        return name.lower() if self.pg else name

    def t(self, kind: str) -> str:
        return {"ref": "BYTEA" if self.pg else "BINARY(16)", "bool": "BOOLEAN" if self.pg else "BINARY(1)",
                "ts": "TIMESTAMP" if self.pg else "DATETIME", "ver": "INTEGER" if self.pg else "BINARY(8)"}[kind]

    def b(self, v: bool):
        return v if self.pg else (b"\x01" if v else b"\x00")

    def when(self, d: datetime | None) -> datetime:
        """A date as 1C stores it: + offset years; the empty date is year 1 (+ offset)."""
        d = d or datetime(1, 1, 1)
        return d.replace(year=d.year + self.offset)

    def create(self, companies: int = 40, contacts: int = 60, year_offset_table: bool = True) -> "Base":
        n, t = self.n, self.t
        with self.eng.begin() as c:
            c.execute(sa.text(
                f"CREATE TABLE {n('_Reference42')} ({n('_IDRRef')} {t('ref')} NOT NULL PRIMARY KEY, "
                f"{n('_Version')} {t('ver')}, {n('_Marked')} {t('bool')} NOT NULL, "
                f"{n('_PredefinedID')} {t('ref')} NOT NULL, {n('_ParentIDRRef')} {t('ref')} NOT NULL, "
                f"{n('_Folder')} {t('bool')} NOT NULL, {n('_Code')} VARCHAR(9) NOT NULL, "
                f"{n('_Description')} VARCHAR(150) NOT NULL, {n('_Fld1234')} VARCHAR(12) NOT NULL, "
                f"{n('_Fld1235')} {t('ts')} NOT NULL, {n('_Fld1236')} NUMERIC(15, 2) NOT NULL, "
                f"{n('_Fld1237')} {t('bool')} NOT NULL)"))
            c.execute(sa.text(
                f"CREATE TABLE {n('_Reference77')} ({n('_IDRRef')} {t('ref')} NOT NULL PRIMARY KEY, "
                f"{n('_Marked')} {t('bool')} NOT NULL, {n('_OwnerIDRRef')} {t('ref')} NOT NULL, "
                f"{n('_Code')} VARCHAR(9) NOT NULL, {n('_Description')} VARCHAR(150) NOT NULL, "
                f"{n('_Fld501')} VARCHAR(50) NOT NULL, {n('_Fld502')} {t('ts')} NOT NULL)"))
            c.execute(sa.text(
                f"CREATE TABLE {n('_Reference42_VT60')} ({n('_Reference42_IDRRef')} {t('ref')} NOT NULL, "
                f"{n('_KeyField')} {t('ref')}, {n('_LineNo61')} NUMERIC(5, 0) NOT NULL, "
                f"{n('_Fld62')} VARCHAR(50) NOT NULL, "
                f"PRIMARY KEY ({n('_Reference42_IDRRef')}, {n('_LineNo61')}))"))
            if year_offset_table:
                col = "ofset" if self.pg else "`Offset`"
                c.execute(sa.text(f"CREATE TABLE {n('_YearOffset')} ({col} INTEGER NOT NULL)"))
                c.execute(sa.text(f"INSERT INTO {n('_YearOffset')} VALUES ({self.offset})"))
        for g in range(3):
            self.groups.append(self._company(f"Группа {g + 1}", folder=True, parent=None, code=f"00-{g:03d}"))
        for i in range(companies):
            parent = self.groups[i % 3]["uuid"]
            self.companies.append(self._company(f"ООО «Ромашка-{i}»", folder=False, parent=parent,
                                                code=f"00-{i + 100:04d}"))
        self.companies[0]["predefined"] = True
        for k in range(contacts):
            owner = self.companies[k % companies]["uuid"] if k % 10 else None  # every 10th one has no owner
            self.contacts.append({
                "uuid": uuid.UUID(int=self.rng.getrandbits(128), version=4), "owner": owner,
                "code": f"{k:06d}", "name": f"Петрова Анна {k}", "phone": f"+7 912 {k:07d}",
                "birth": None if k % 7 == 0 else datetime(1960 + k % 40, 1 + k % 12, 1 + k % 28),
                "marked": k % 13 == 0})
        self._insert()
        return self

    def _company(self, name, *, folder, parent, code) -> dict:
        i = len(self.companies) + len(self.groups)
        return {"uuid": uuid.UUID(int=self.rng.getrandbits(128), version=4), "name": name, "folder": folder,
                "parent": parent, "code": code, "inn": "" if folder else f"77{i:08d}",
                "registered": None if folder or i % 6 == 0 else datetime(2001 + i % 20, 2, 28, 10, 30),
                "revenue": Decimal(0) if folder else Decimal(i * 1000) + Decimal("0.25"),
                "active": not folder and i % 4 != 0, "marked": i % 9 == 0, "predefined": False, "version": i + 1}

    def _insert(self) -> None:
        n = self.n
        rows = []
        for r in self.groups + self.companies:
            rows.append({"id": uuid_to_idrref(r["uuid"]),
                         "ver": r["version"] if self.pg else r["version"].to_bytes(8, "big"),
                         "marked": self.b(r["marked"]),
                         "pre": uuid_to_idrref(uuid.UUID(int=7)) if r["predefined"] else ZERO,
                         "parent": uuid_to_idrref(r["parent"]) if r["parent"] else ZERO,
                         "folder": self.b(not r["folder"]),  # 1C: 0x00 = a group
                         "code": r["code"].ljust(9), "descr": r["name"], "inn": r["inn"],
                         "reg": self.when(r["registered"]), "rev": r["revenue"], "act": self.b(r["active"])})
        with self.eng.begin() as c:
            c.execute(sa.text(
                f"INSERT INTO {n('_Reference42')} VALUES (:id, :ver, :marked, :pre, :parent, :folder, :code, "
                ":descr, :inn, :reg, :rev, :act)"), rows)
            if self.contacts:
                c.execute(sa.text(f"INSERT INTO {n('_Reference77')} VALUES (:id, :marked, :owner, :code, :descr, "
                                  ":phone, :birth)"),
                          [{"id": uuid_to_idrref(k["uuid"]), "marked": self.b(k["marked"]),
                            "owner": uuid_to_idrref(k["owner"]) if k["owner"] else ZERO, "code": k["code"],
                            "descr": k["name"], "phone": k["phone"], "birth": self.when(k["birth"])}
                           for k in self.contacts])
            c.execute(sa.text(f"INSERT INTO {n('_Reference42_VT60')} VALUES (:owner, NULL, :line, :phone)"),
                      [{"owner": uuid_to_idrref(r["uuid"]), "line": line, "phone": f"+7 495 {j:03d}-{line:02d}"}
                       for j, r in enumerate(self.companies[:5]) for line in (1, 2, 3)])

    def close(self) -> None:
        self.eng.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def base_url(request):
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "maria_url")


# ------------------------------------------------------------------------------------------ references

def test_idrref_byte_order_is_1cs():
    raw = bytes.fromhex("b762b13668d0905011eb76684b9f6867")
    assert str(idrref_to_uuid(raw)) == "4b9f6867-7668-11eb-b762-b13668d09050"
    assert uuid_to_idrref("4b9f6867-7668-11eb-b762-b13668d09050") == raw
    refs = [uuid_to_idrref(uuid.uuid4()) for _ in range(500)] + [ZERO, None, b"\x01\x02"]
    text, bad = refs_to_guids(pa.array(refs, pa.binary()))
    expected = [str(idrref_to_uuid(r)) for r in refs[:500]] + [None, None, None]
    assert text.to_pylist() == expected and bad.tolist() == [False] * 502 + [True]


def test_dates_lose_the_2000_years_and_the_empty_date_becomes_null():
    ts = pa.array([datetime(4024, 2, 29, 23, 59, 59), datetime(2001, 1, 1), None, datetime(3970, 7, 1)],
                  pa.timestamp("s"))
    assert shift_years(ts, 2000).to_pylist() == [datetime(2024, 2, 29, 23, 59, 59), None, None, datetime(1970, 7, 1)]
    assert shift_years(pa.array([date(1, 1, 1), date(1999, 12, 31)]), 0).to_pylist() == [None, date(1999, 12, 31)]
    assert shift_years(pa.array([datetime(2125, 2, 28)], pa.timestamp("s")), 100).to_pylist() == [datetime(2025, 2, 28)]


# ------------------------------------------------------------------------------------------ catalogs

def test_a_catalog_reads_with_1c_names_guids_booleans_and_real_dates(base_url):
    base = Base(base_url).create()
    src = OnecDbSource(base_url, reference="_Reference42", fields=COMPANY_FIELDS)
    src.check()
    assert src.year_offset() == 2000  # from _YearOffset
    assert src.columns() == ["Ссылка", "ПометкаУдаления", "Предопределенный", "Родитель", "ЭтоГруппа", "Код",
                             "Наименование", "ИНН", "ДатаРегистрации", "Выручка", "Активен"]
    rows = [r for b in src.read(None, 7) for r in b.table.to_pylist()]
    assert len(rows) == 43
    by_ref = {r["Ссылка"]: r for r in rows}
    for want in base.groups + base.companies:
        got = by_ref[str(want["uuid"])]
        assert got["ЭтоГруппа"] is want["folder"]
        assert got["ПометкаУдаления"] is want["marked"]
        assert got["Предопределенный"] is want["predefined"]
        assert got["Родитель"] == (str(want["parent"]) if want["parent"] else None)
        assert got["Код"] == want["code"]  # the padding of 1C's fixed-length codes is gone
        assert got["Наименование"] == want["name"]
        assert got["ИНН"] == (want["inn"] or None)
        assert got["ДатаРегистрации"] == want["registered"]  # 2000 years off; the empty date is NULL
        assert got["Выручка"] == want["revenue"]
        assert got["Активен"] is want["active"]
    base.close()


def test_the_year_offset_is_zero_without_the_table_and_can_be_given(pg_url):
    base = Base(pg_url, offset=0).create(companies=6, contacts=0, year_offset_table=False)
    plain = OnecDbSource(pg_url, reference="_reference42", fields=COMPANY_FIELDS)
    assert plain.year_offset() == 0
    got = {r["Ссылка"]: r["ДатаРегистрации"] for b in plain.read(None, 100) for r in b.table.to_pylist()}
    assert {str(c["uuid"]): c["registered"] for c in base.companies}.items() <= got.items()
    forced = OnecDbSource(pg_url, reference="_Reference42", fields=COMPANY_FIELDS, year_offset=1600)
    shifted = [r["ДатаРегистрации"] for b in forced.read(None, 100) for r in b.table.to_pylist()]
    assert {d.year for d in shifted if d} <= set(range(401, 421))
    base.close()


def test_a_tabular_part_is_keyed_by_its_owner_and_line(base_url):
    base = Base(base_url).create(companies=8, contacts=0)
    src = OnecDbSource(base_url, table="_Reference42_VT60", fields={"Телефон": "_Fld62"})
    assert src.columns() == ["Ссылка", "НомерСтроки", "Телефон"]
    rows = [r for b in src.read(None, 4) for r in b.table.to_pylist()]
    assert len(rows) == 15 and {r["Ссылка"] for r in rows} == {str(c["uuid"]) for c in base.companies[:5]}
    assert sorted(int(r["НомерСтроки"]) for r in rows if r["Ссылка"] == str(base.companies[2]["uuid"])) == [1, 2, 3]
    base.close()


def test_a_rowversion_watermark_reads_only_changed_items(maria_url):
    base = Base(maria_url).create(companies=30, contacts=0)
    src = OnecDbSource(maria_url, reference="_Reference42", fields=COMPANY_FIELDS, watermark="_version",
                       page_rows=10)
    cursors = [b.cursor for b in src.read(None, 8)]
    assert cursors[-1]["row"] == 33
    # 1C writes three items: MS SQL gives each a new rowversion, higher than any before
    bumped = [base.companies[i] for i in (3, 17, 25)]
    with base.eng.begin() as c:
        for k, item in enumerate(bumped):
            c.execute(sa.text("UPDATE _Reference42 SET _Version = :v, _Description = :d WHERE _IDRRef = :id"),
                      {"v": (1000 + k).to_bytes(8, "big"), "d": item["name"] + " (изм.)",
                       "id": uuid_to_idrref(item["uuid"])})
    nxt = src.next_pass(json.loads(json.dumps(cursors[-1])))
    rows = [r for b in src.read(nxt, 8) for r in b.table.to_pylist()]
    assert [r["Ссылка"] for r in rows] == [str(i["uuid"]) for i in bumped]
    assert all(r["Наименование"].endswith("(изм.)") for r in rows)
    base.close()


def test_a_wrong_table_or_field_is_named(pg_url):
    Base(pg_url).create(companies=2, contacts=0).close()
    with pytest.raises(TerminalError, match=r"no column '_Fld9999' \(fields\.ИНН\)"):
        OnecDbSource(pg_url, reference="_Reference42", fields={"ИНН": "_Fld9999"}).check()
    with pytest.raises(TerminalError, match=r"does not exist"):
        OnecDbSource(pg_url, reference="_Reference4242").check()
    with pytest.raises(TerminalError, match=r"exactly one of `reference`, `document` and `table`"):
        OnecDbSource(pg_url, reference="_Reference42", document="_Document7")


# ------------------------------------------------------------------------------------------ through the CLI

PROJECT = """\
version: 1
name: from-1c-database
state: {url: "sqlite:///.etl/state.db"}
defaults: {batch_size: 16, max_reject_rate: 0.5}
sources:
  onec: {type: onec_db, url: "${ONEC_DB_URL}"}
targets:
  warehouse: {type: sql, url: "sqlite:///.etl/warehouse.db"}
target: warehouse
pipelines: [companies, contacts]
"""

COMPANIES = """\
entity: company
source:
  use: onec
  reference: _Reference42          # Справочник.Контрагенты
  fields: {ИНН: _Fld1234, ДатаРегистрации: _Fld1235, Выручка: _Fld1236, Активен: _Fld1237}
key: Ссылка
filter:
  - {column: ЭтоГруппа, not_equals: "true"}      # groups are no companies
mapping:
  title: Наименование
  inn: ИНН
  revenue: Выручка
  is_active: Активен
  created_at: ДатаРегистрации
"""

CONTACTS = """\
entity: contact
source:
  use: onec
  reference: _Reference77          # Справочник.КонтактныеЛица, owned by a counterparty
  fields: {Телефон: _Fld501, ДатаРождения: _Fld502}
key: Ссылка
mapping:
  full_name: Наименование
  name: Наименование
  phone: Телефон
  birthdate: ДатаРождения
links:
  company: {pipeline: companies, column: Владелец}
"""


@pytest.mark.parametrize("driver", ["postgresql", "mariadb", "postgresql+pyodbc"])
def test_companies_and_their_contacts_load_from_the_1c_database(tmp_path, cli, driver, request):
    if "pyodbc" in driver and "PostgreSQL Unicode" not in odbc_drivers():
        pytest.skip("ODBC driver 'PostgreSQL Unicode' is not registered")
    url = request.getfixturevalue("maria_url" if driver == "mariadb" else "pg_url")
    base = Base(url).create(companies=40, contacts=60)
    read_url = url if "pyodbc" not in driver else \
        "postgresql+pyodbc:///?odbc_connect=" + quote_plus(pg_odbc_connect(url))
    p = tmp_path / "project"
    (p / "pipelines").mkdir(parents=True)
    (p / "pipelines.yaml").write_text(PROJECT, encoding="utf-8")
    (p / "pipelines" / "companies.yaml").write_text(COMPANIES, encoding="utf-8")
    (p / "pipelines" / "contacts.yaml").write_text(CONTACTS, encoding="utf-8")
    (p / ".env").write_text(f"ONEC_DB_URL={read_url}\n", encoding="utf-8")

    res = cli("validate", "-C", p)
    assert res.exit_code == 0, res.output
    res = cli("run", "--json", "-C", p)
    assert res.exit_code == 0, res.output
    done = {e["pipeline"]: e for e in map(json.loads, filter(lambda s: s.startswith("{"), res.output.splitlines()))
            if e["event"] == "pipeline_finished"}
    assert (done["companies"]["read"], done["companies"]["created"]) == (43, 40)
    assert done["companies"]["reasons"] == {"filtered": 3}
    assert (done["contacts"]["read"], done["contacts"]["created"], done["contacts"]["rejected"]) == (60, 60, 0)

    eng = sa.create_engine(f"sqlite:///{p / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        companies = {sid: (title, inn, created) for sid, title, inn, created in
                     c.execute(sa.text("SELECT source_id, title, inn, created_at FROM companies"))}
        contacts = {sid: (company, birth) for sid, company, birth in
                    c.execute(sa.text("SELECT source_id, company_id, birthdate FROM contacts"))}
    eng.dispose()
    first = base.companies[1]
    assert companies[str(first["uuid"])][:2] == (first["name"], first["inn"])
    assert str(companies[str(first["uuid"])][2]).startswith(first["registered"].strftime("%Y-%m-%d %H:%M:%S"))
    for k in base.contacts:
        company, birth = contacts[str(k["uuid"])]
        assert company == (str(k["owner"]) if k["owner"] else None)  # the GUIDs join, as 1C's own links do
        assert birth == (k["birth"].date().isoformat() if k["birth"] else None)
    base.close()
