"""A cutover from a Bitrix24 backup: the engineer gets the portal's archive (volumes, maybe encrypted) and reads
companies, contacts, deals, smart-process items and list elements straight out of it, with their phones, e-mails,
user fields, pipelines, stages and bindings, without restoring anything."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.base import BadInputError, TerminalError
from connectors.bitrix24.backup import (
    BackupCompanySource, BackupContactSource, BackupDealSource, BackupListElementSource, BackupSmartProcessSource,
    BackupTableSource,
)
from connectors.bitrix24.backup.crypto import WrongPasswordError
from tests.backup_writer import Serialized, Table, cbackup_dump, mysqldump, write_backup

T0 = dt.datetime(2023, 3, 4, 10, 0, 0)


def crm_tables(n_contacts: int = 30) -> list[Table]:
    """A small CRM with every tricky value the reference warns about, in dump (name) order."""
    V = "varchar(255)"
    companies = Table("b_crm_company", [("ID", "int(10) unsigned"), ("DATE_CREATE", "datetime"), ("TITLE", V),
                                        ("ASSIGNED_BY_ID", "int(11)"), ("IS_MY_COMPANY", "char(1)"),
                                        ("REVENUE", "decimal(18,2)"), ("COMMENTS", "text")])
    companies.rows = [
        [1, T0, "ООО «Ромашка»", 1, "N", "1500000.50", "line1\nline2 'quoted' \\ back"],
        [2, T0, "Our own LLC", 1, "Y", None, None],
        [3, None, 'ИП "Петров" ),(; --', 2, "N", "0.00", ""],
    ]
    contacts = Table("b_crm_contact", [("ID", "int(10) unsigned"), ("DATE_CREATE", "datetime"), ("NAME", V),
                                       ("LAST_NAME", V), ("COMPANY_ID", "int(10) unsigned"),
                                       ("ASSIGNED_BY_ID", "int(11)"), ("BIRTHDATE", "date"), ("PHOTO", "int(18)"),
                                       ("COMMENTS", "text")])
    for i in range(1, n_contacts + 1):
        contacts.rows.append([i, T0 + dt.timedelta(hours=i), f"Имя{i}" if i != 5 else "O'Brien \\ Jr.",
                              f"Фамилия{i}", (i % 3) + 1 if i % 4 else None, 1 + i % 2,
                              "0000-00-00" if i == 7 else dt.date(1980, 1, 1) + dt.timedelta(days=i),
                              None, None if i % 2 else f"comment {i};\n next line"])
    deal_cat = Table("b_crm_deal_category", [("ID", "int(11)"), ("NAME", V), ("SORT", "int(11)")],
                     [[3, "Опт", 10]])
    deals = Table("b_crm_deal", [("ID", "int(10) unsigned"), ("TITLE", V), ("CATEGORY_ID", "int(11)"),
                                 ("STAGE_ID", "varchar(50)"), ("STAGE_SEMANTIC_ID", "varchar(3)"),
                                 ("COMPANY_ID", "int(11)"), ("CONTACT_ID", "int(11)"), ("OPPORTUNITY", "decimal(18,2)"),
                                 ("CURRENCY_ID", "varchar(50)"), ("ASSIGNED_BY_ID", "int(11)")])
    deals.rows = [[1, "Поставка", 0, "WON", "S", 1, 1, "1000.00", "RUB", 1],
                  [2, "Опт-сделка", 3, "C3:NEW", "P", 3, 2, "99.99", "USD", 2],
                  [3, "Без стадии", 0, "UNKNOWN", None, None, None, None, None, 1]]
    deal_contact = Table("b_crm_deal_contact", [("DEAL_ID", "int(11)"), ("CONTACT_ID", "int(11)"), ("SORT", "int(11)"),
                                                ("IS_PRIMARY", "char(1)")],
                         [[1, 2, 20, "N"], [1, 1, 10, "Y"], [2, 2, 10, "Y"]])
    dyn_items = Table("b_crm_dynamic_items_130", [("ID", "int(11)"), ("TITLE", V), ("CATEGORY_ID", "int(11)"),
                                                  ("STAGE_ID", "varchar(50)"), ("ASSIGNED_BY_ID", "int(11)"),
                                                  ("UF_CRM_7_1700000000", "text"), ("UF_CRM_7_1700000001", "text")])
    dyn_items.rows = [[1, "Заявка 1", 14, "DT130_14:NEW", 1, Serialized(["5", "6"]), "x"],
                      [2, "Заявка 2", 14, "DT130_14:SUCCESS", 2, None, None]]
    dyn_type = Table("b_crm_dynamic_type", [("ID", "int(11)"), ("ENTITY_TYPE_ID", "int(11)"), ("NAME", V),
                                            ("TABLE_NAME", V)], [[7, 130, "Заявки", "b_crm_dynamic_items_130"]])
    entity_contact = Table("b_crm_entity_contact", [("ENTITY_TYPE_ID", "int(11)"), ("ENTITY_ID", "int(11)"),
                                                    ("CONTACT_ID", "int(11)"), ("SORT", "int(11)")],
                           [[130, 1, 3, 10], [2, 1, 9, 10]])
    fm = Table("b_crm_field_multi", [("ID", "int(10) unsigned"), ("ENTITY_ID", "varchar(16)"), ("ELEMENT_ID", "int(11)"),
                                     ("TYPE_ID", "varchar(16)"), ("VALUE_TYPE", "varchar(50)"),
                                     ("COMPLEX_ID", "varchar(100)"), ("VALUE", V)])
    k = 0
    for i in range(1, n_contacts + 1):
        for t, vt, v in (("PHONE", "WORK", f"+7 900 000-00-{i:02d}"), ("EMAIL", "HOME", f"c{i}@example.ru")):
            k += 1
            fm.rows.append([k, "CONTACT", i, t, vt, f"{t}_{vt}", v])
    fm.rows += [[k + 1, "CONTACT", 1, "PHONE", "MOBILE", "PHONE_MOBILE", "8 (495) 123-45-67"],
                [k + 2, "COMPANY", 1, "EMAIL", "WORK", "EMAIL_WORK", "info@romashka.ru"],
                [k + 3, "LEAD", 1, "PHONE", "WORK", "PHONE_WORK", "+7 000"]]
    item_cat = Table("b_crm_item_category", [("ID", "int(11)"), ("ENTITY_TYPE_ID", "int(11)"), ("NAME", V),
                                             ("IS_DEFAULT", "char(1)"), ("SORT", "int(11)")],
                     [[14, 130, "Основная", "Y", 100]])
    requisite = Table("b_crm_requisite", [("ID", "int(11)"), ("ENTITY_TYPE_ID", "int(11)"), ("ENTITY_ID", "int(11)"),
                                          ("SORT", "int(11)"), ("RQ_INN", "varchar(15)"), ("RQ_KPP", "varchar(9)"),
                                          ("RQ_OGRN", "varchar(13)")],
                      [[1, 4, 1, 500, "7707083893", "773601001", "1027700132195"], [2, 3, 1, 500, "9", None, None]])
    status = Table("b_crm_status", [("ID", "int(11)"), ("ENTITY_ID", "varchar(50)"), ("STATUS_ID", "varchar(50)"),
                                    ("NAME", V), ("SORT", "int(11)"), ("SEMANTICS", "varchar(3)")],
                   [[1, "DEAL_STAGE", "WON", "Сделка успешна", 60, "S"],
                    [2, "DEAL_STAGE_3", "C3:NEW", "Новая (опт)", 10, None],
                    [3, "DYNAMIC_130_STAGE_14", "DT130_14:NEW", "Начало", 10, None],
                    [4, "DYNAMIC_130_STAGE_14", "DT130_14:SUCCESS", "Успех", 20, "S"]])
    iblock = Table("b_iblock", [("ID", "int(11)"), ("IBLOCK_TYPE_ID", "varchar(50)"), ("CODE", V), ("NAME", V),
                                ("VERSION", "int(11)")], [[5, "lists", "objects", "Объекты", 1]])
    elements = Table("b_iblock_element", [("ID", "int(11)"), ("IBLOCK_ID", "int(11)"), ("NAME", V),
                                          ("CREATED_BY", "int(11)"), ("WF_STATUS_ID", "int(11)"),
                                          ("WF_PARENT_ELEMENT_ID", "int(11)")],
                     [[10, 5, "Склад №1", 1, 1, None], [11, 5, "Склад №1 (черновик)", 1, 2, 10],
                      [12, 6, "Чужой", 1, 1, None], [13, 5, "Офис", 2, 1, None]])
    props = Table("b_iblock_element_property", [("ID", "int(11)"), ("IBLOCK_PROPERTY_ID", "int(11)"),
                                                ("IBLOCK_ELEMENT_ID", "int(11)"), ("VALUE", "text"),
                                                ("VALUE_ENUM", "int(11)")],
                  [[1, 20, 10, "ул. Ленина, 1", None], [2, 21, 10, "31", 31], [3, 21, 10, "32", 32],
                   [4, 20, 12, "x", None], [5, 20, 13, "пр. Мира; 5", None]])
    prop_def = Table("b_iblock_property", [("ID", "int(11)"), ("IBLOCK_ID", "int(11)"), ("NAME", V), ("CODE", V),
                                           ("PROPERTY_TYPE", "char(1)"), ("MULTIPLE", "char(1)"), ("SORT", "int(11)")],
                     [[20, 5, "Адрес", "ADDRESS", "S", "N", 10], [21, 5, "Тип", "", "L", "Y", 20]])
    prop_enum = Table("b_iblock_property_enum", [("ID", "int(11)"), ("PROPERTY_ID", "int(11)"), ("VALUE", V)],
                      [[31, 21, "Склад"], [32, 21, "Офис"]])
    option = Table("b_option", [("MODULE_ID", "varchar(50)"), ("NAME", V), ("VALUE", "text")],
                   [["crm", "default_deal_category_name", "Общая"], ["main", "x", "y"]])
    users = Table("b_user", [("ID", "int(11)"), ("LOGIN", V), ("EMAIL", V), ("NAME", V), ("LAST_NAME", V)],
                  [[1, "admin", "admin@example.ru", "Анна", "Иванова"], [2, "petrov", "p@example.ru", "Пётр", None]])
    uf = Table("b_user_field", [("ID", "int(11)"), ("ENTITY_ID", "varchar(50)"), ("FIELD_NAME", "varchar(50)"),
                                ("USER_TYPE_ID", "varchar(50)"), ("MULTIPLE", "char(1)")],
               [[1, "CRM_CONTACT", "UF_CRM_SOURCE", "enumeration", "N"],
                [2, "CRM_CONTACT", "UF_CRM_TAGS", "string", "Y"],
                [3, "CRM_7", "UF_CRM_7_1700000000", "enumeration", "Y"]])
    uf_enum = Table("b_user_field_enum", [("ID", "int(11)"), ("USER_FIELD_ID", "int(11)"), ("VALUE", V)],
                    [[1, 1, "Сайт"], [2, 1, "Звонок"], [5, 3, "Красный"], [6, 3, "Синий"]])
    uts = Table("b_uts_crm_contact", [("VALUE_ID", "int(11)"), ("UF_CRM_SOURCE", "text"), ("UF_CRM_TAGS", "text")],
                [[1, "2", Serialized(["важно", "vip"])], [3, "1", None]])
    # the dump holds other tables too, big and small, before and after ours
    noise_before = Table("b_blog_post", [("ID", "int(11)"), ("TEXT", "longtext")],
                         [[i, "blog ');\nINSERT INTO `b_crm_contact` VALUES (999,'x');" * 20] for i in range(200)])
    noise_after = Table("b_xml_tree", [("ID", "int(11)"), ("V", "text")], [[i, "v" * 100] for i in range(50)])
    return [noise_before, companies, contacts, deals, deal_cat, deal_contact, dyn_items, dyn_type, entity_contact,
            fm, item_cat, requisite, status, iblock, elements, props, prop_def, prop_enum, option, users, uf,
            uf_enum, uts, noise_after]


def read_rows(source, batch_size: int = 7) -> tuple[list[dict], list]:
    rows, rejects, cursor = [], [], None
    for b in source.read(None, batch_size):
        assert b.table.num_rows <= batch_size
        rows += b.table.to_pylist()
        rejects += b.rejects.to_pylist()
    return rows, rejects


@pytest.fixture(scope="module")
def backups(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("backups")
    tables = crm_tables()
    utf = cbackup_dump(tables, "utf8", insert_limit=700)
    cp = cbackup_dump(tables, "cp1251", insert_limit=700)
    out = {}
    (d / "plain").mkdir()
    out["plain"] = write_backup(d / "plain", utf, gz=False)
    (d / "volumes").mkdir()
    out["volumes"] = write_backup(d / "volumes", cp, volume_size=8192, sql_part_size=5000, long_prefix=True)
    (d / "aes").mkdir()
    out["aes"] = write_backup(d / "aes", utf, password="Секрет 42", volume_size=16384)
    (d / "bf").mkdir()
    out["bf"] = write_backup(d / "bf", cp, password="old-pass", cipher="bf-ecb", gz=False)
    (d / "sql").mkdir()
    parts = [utf[i:i + 3000] for i in range(0, len(utf), 3000)]
    for i, p in enumerate(parts):
        (d / "sql" / ("dump.sql" if i == 0 else f"dump.sql.{i}")).write_bytes(p)
    out["sql"] = d / "sql" / "dump.sql"
    (d / "mysqldump").mkdir()
    out["mysqldump"] = d / "mysqldump" / "mysql_dump_sitemanager_20240506.sql"
    out["mysqldump"].write_bytes(mysqldump(tables, "utf8mb4", rows_per_insert=4))
    return out


PASSWORDS = {"aes": "Секрет 42", "bf": "old-pass"}
KINDS = ["plain", "volumes", "aes", "bf", "sql", "mysqldump"]


@pytest.mark.parametrize("kind", KINDS)
def test_contacts_come_with_phones_emails_companies_and_user_fields(backups, kind, tmp_path):
    src = BackupContactSource(backups[kind], password=PASSWORDS.get(kind), cache_dir=tmp_path)
    src.check()
    rows, rejects = read_rows(src)
    assert len(rows) == 30 and not rejects
    by = {r["ID"]: r for r in rows}
    assert by[1]["PHONE"] == "+7 900 000-00-01; 8 (495) 123-45-67"
    assert by[1]["EMAIL"] == "c1@example.ru"
    assert by[5]["NAME"] == "O'Brien \\ Jr." and by[2]["COMMENTS"] == "comment 2;\n next line"
    assert by[3]["LAST_NAME"] == "Фамилия3" and by[3]["DATE_CREATE"] == T0 + dt.timedelta(hours=3)
    assert by[7]["BIRTHDATE"] is None and by[8]["BIRTHDATE"] == dt.date(1980, 1, 9)
    assert by[1]["UF_CRM_SOURCE"] == "Звонок" and by[1]["UF_CRM_TAGS"] == "важно; vip"
    assert by[3]["UF_CRM_SOURCE"] == "Сайт" and by[2]["UF_CRM_TAGS"] is None
    assert by[1]["COMPANY_ID"] == 2 and by[4]["COMPANY_ID"] is None
    assert by[2]["ASSIGNED_BY_EMAIL"] == "admin@example.ru" and by[1]["ASSIGNED_BY_NAME"] == "Пётр"
    assert by[9]["_line"] >= 1 and re.search(r"\.sql(\.\d+)?$", by[9]["_file"])
    assert set(src.columns()) >= {"ID", "NAME", "PHONE", "EMAIL", "UF_CRM_TAGS", "COMPANY_IDS"}


def test_companies_deals_items_and_list_elements(backups, tmp_path):
    path = backups["volumes"]
    companies, _ = read_rows(BackupCompanySource(path, cache_dir=tmp_path))
    assert [c["ID"] for c in companies] == [1, 3]  # our own legal entity is left out
    assert companies[0]["TITLE"] == "ООО «Ромашка»" and companies[1]["TITLE"] == 'ИП "Петров" ),(; --'
    assert companies[0]["RQ_INN"] == "7707083893" and companies[0]["EMAIL"] == "info@romashka.ru"
    assert companies[0]["COMMENTS"] == "line1\nline2 'quoted' \\ back" and str(companies[0]["REVENUE"]) == "1500000.50"

    deals, _ = read_rows(BackupDealSource(path, cache_dir=tmp_path))
    by = {d["ID"]: d for d in deals}
    assert by[1]["CATEGORY_NAME"] == "Общая" and by[1]["STAGE_NAME"] == "Сделка успешна"
    assert by[2]["CATEGORY_NAME"] == "Опт" and by[2]["STAGE_NAME"] == "Новая (опт)"
    assert by[1]["CONTACT_IDS"] == "1; 2" and by[3]["CONTACT_IDS"] is None and by[3]["STAGE_NAME"] is None
    assert by[1]["STAGE_SEMANTICS"] == "S" and by[2]["ASSIGNED_BY_LOGIN"] == "petrov"

    items, _ = read_rows(BackupSmartProcessSource(path, entity_type_id=130, cache_dir=tmp_path))
    assert [(i["TITLE"], i["CATEGORY_NAME"], i["STAGE_NAME"]) for i in items] == [
        ("Заявка 1", "Основная", "Начало"), ("Заявка 2", "Основная", "Успех")]
    assert items[0]["UF_CRM_7_1700000000"] == "Красный; Синий" and items[0]["CONTACT_IDS"] == "3"

    elements, _ = read_rows(BackupListElementSource(path, iblock_id=5, cache_dir=tmp_path))
    assert [(e["NAME"], e["ADDRESS"], e["PROPERTY_21"]) for e in elements] == [
        ("Склад №1", "ул. Ленина, 1", "Склад; Офис"), ("Офис", "пр. Мира; 5", None)]


def test_resume_from_a_cursor_reads_exactly_the_rest(backups, tmp_path):
    for kind in ("volumes", "sql"):
        src = BackupContactSource(backups[kind], cache_dir=tmp_path)
        batches = list(src.read(None, 4))
        full = [r["ID"] for b in batches for r in b.table.to_pylist()]
        assert full == list(range(1, 31))
        for k in (0, 2, 5):
            cursor = json.loads(json.dumps(batches[k].cursor))  # as the state store keeps it
            rest = [r["ID"] for b in src.read(cursor, 4) for r in b.table.to_pylist()]
            done = [r["ID"] for b in batches[:k + 1] for r in b.table.to_pylist()]
            assert done + rest == full, (kind, k)


def test_a_wrong_password_or_a_corrupt_archive_gives_a_clear_error(backups, tmp_path):
    with pytest.raises(WrongPasswordError, match="wrong password"):
        BackupContactSource(backups["aes"], password="nope", cache_dir=tmp_path).check()
    with pytest.raises(TerminalError, match="encrypted: give its password"):
        BackupContactSource(backups["aes"], cache_dir=tmp_path).check()
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in backups["volumes"].parent.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    first = broken / backups["volumes"].name
    data = bytearray(first.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the first deflate stream
    first.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="corrupt gzip data"):
        read_rows(BackupContactSource(first, cache_dir=tmp_path / "c1"))
    (broken / f"{first.name}.2").unlink()
    with pytest.raises(TerminalError, match=r"volume .*\.2 is missing"):
        BackupContactSource(first, cache_dir=tmp_path / "c2").check()
    tarred = tmp_path / "x.tar"
    tarred.write_bytes(b"\x00" * 100 + b"garbage" * 100)
    with pytest.raises(BadInputError, match="not a Bitrix backup archive"):
        BackupContactSource(tarred, cache_dir=tmp_path / "c3").check()


def test_reading_stops_before_the_site_files(tmp_path):
    dump = cbackup_dump(crm_tables(5))
    first = write_backup(tmp_path, dump, files=[("upload/big.bin", b"\x00" * 200_000)], volume_size=4096)
    # ruin the volumes that hold only site files: the reader must never get there
    vols = sorted(tmp_path.glob(first.name + ".*"), key=lambda p: int(p.suffix[1:]))
    for v in vols[-20:]:
        v.write_bytes(b"not gzip at all")
    rows, _ = read_rows(BackupTableSource(first, table="b_crm_contact", cache_dir=tmp_path / "c"))
    assert len(rows) == 5


def test_a_backup_goes_through_the_cli_into_a_sql_warehouse_with_links(backups, cli, tmp_path):
    project = tmp_path / "p"
    (project / "pipelines").mkdir(parents=True)
    (project / ".env").write_text(f"BACKUP_PASSWORD={PASSWORDS['aes']}\n", encoding="utf-8")
    (project / "pipelines.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        name: backup-cutover
        state: {{url: "sqlite:///.etl/state.db"}}
        defaults: {{batch_size: 8}}
        sources:
          portal:
            type: bitrix24_backup
            path: {backups['aes']}
            password: ${{BACKUP_PASSWORD}}
        targets:
          warehouse: {{type: sql, url: "sqlite:///.etl/warehouse.db"}}
        target: warehouse
        pipelines: [companies, contacts, deals]
        """), encoding="utf-8")
    (project / "pipelines" / "companies.yaml").write_text(textwrap.dedent("""\
        entity: company
        source: {use: portal, entity: company}
        key: ID
        mapping: {title: TITLE, inn: RQ_INN, email: EMAIL, revenue: REVENUE, created_at: DATE_CREATE,
                  responsible_name: ASSIGNED_BY_NAME, comments: COMMENTS}
        """), encoding="utf-8")
    (project / "pipelines" / "contacts.yaml").write_text(textwrap.dedent("""\
        entity: contact
        source: {use: portal, entity: contact}
        key: ID
        mapping: {name: NAME, last_name: LAST_NAME, phone: PHONE, email: EMAIL, birthdate: BIRTHDATE,
                  created_at: DATE_CREATE}
        links:
          company: {pipeline: companies, column: COMPANY_ID}
        """), encoding="utf-8")
    (project / "pipelines" / "deals.yaml").write_text(textwrap.dedent("""\
        entity: deal
        source: {use: portal, entity: deal}
        key: ID
        mapping: {title: TITLE, direction: CATEGORY_NAME, stage: STAGE_NAME, amount: OPPORTUNITY,
                  currency: CURRENCY_ID}
        links:
          contact: {pipeline: contacts, column: CONTACT_ID}
          company: {pipeline: companies, column: COMPANY_ID}
        """), encoding="utf-8")
    res = cli("validate", "-C", project)
    assert res.exit_code == 0, res.output
    assert PASSWORDS["aes"] not in res.output
    res = cli("run", "--json", "-C", project)
    assert PASSWORDS["aes"] not in res.output
    events = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    done = {e["pipeline"]: e for e in events if e.get("event") == "pipeline_finished"}
    assert done["companies"]["created"] == 2 and done["contacts"]["read"] == 30
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        titles = dict(c.execute(sa.text("SELECT source_id, title FROM companies")).all())
        assert titles == {"1": "ООО «Ромашка»", "3": 'ИП "Петров" ),(; --'}
        phone = c.execute(sa.text("SELECT phone FROM contacts WHERE source_id = '2'")).scalar()
        assert phone == "+7 900 000-00-02"
        linked = c.execute(sa.text("SELECT count(*) FROM contacts WHERE company_id IS NOT NULL")).scalar()
        assert linked > 0
        deal = c.execute(sa.text("SELECT direction, stage, amount, contact_id FROM deals WHERE source_id = '2'")).one()
        assert deal[0] == "Опт" and deal[1] == "Новая (опт)" and abs(deal[2] - 99.99) < 1e-9 and deal[3] is not None
    eng.dispose()
    # contacts of our own legal entity (company 2, left out) are rejected as unresolved links, no other
    own = [i for i in range(1, 31) if i % 4 and (i % 3) + 1 == 2]
    assert done["contacts"]["rejected"] == len(own) and done["contacts"]["created"] == 30 - len(own)


def _big_backup(tmp_path: Path, password: str | None = None) -> Path:
    """A backup whose dump holds a big table before the CRM's: gzip members every 64 KB, volumes of 128 KB."""
    tables = crm_tables()
    import hashlib

    big = Table("b_search_content", [("ID", "int(11)"), ("BODY", "longtext")],  # hex: compresses about 2:1
                [[i, "".join(hashlib.sha256(f"{i}/{j}".encode()).hexdigest() for j in range(40))]
                 for i in range(600)])
    dump = cbackup_dump([big, *tables], "utf8", insert_limit=20_000)
    assert len(dump) > 1_500_000
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_backup(tmp_path, dump, volume_size=128 * 1024, sql_part_size=400_000, password=password)


@pytest.mark.parametrize("password", [None, "Секрет 42"])
def test_a_pass_enters_the_archive_at_a_restart_point_and_reads_the_same_rows(tmp_path, password):
    from connectors.bitrix24.backup.archive import BackupDump

    first = _big_backup(tmp_path / "arc", password)
    whole = BackupDump(first, restart_every=32 * 1024, password=password)
    full = b"".join(d for _, d in whole.chunks())
    points = whole.seek_points()
    assert len(points) > 20 and all(p["dump"] < len(full) for p in points)
    size = sum(p.stat().st_size for p in tmp_path.joinpath("arc").iterdir())
    for start in (0, 1, 400_000, 400_001, len(full) // 2, len(full) - 10):
        d = BackupDump(first, password=password)
        got = b"".join(data for _, data in d.chunks(start, points))
        assert got == full[start:], start
        if start > 500_000:
            assert d._volumes.inflated < size * 0.6  # it did not inflate the archive from the start

    # the sources: the same rows with and without restart points; a later pass enters at the contacts table
    def rows_of(**kw):
        src = BackupContactSource(first, cache_dir=tmp_path / f"c{len(kw)}", password=password, **kw)
        rows = [r for b in src.read(None, 7) for r in b.table.to_pylist()]
        return rows, src.dump()._volumes.inflated

    near, inflated_near = rows_of(restart_every=32 * 1024)
    far, inflated_far = rows_of()  # the default: points 16 MB apart, none in this small archive but the start
    assert [r["ID"] for r in near] == list(range(1, 31)) and near == far
    assert inflated_near < inflated_far * 0.6


def test_a_resume_inside_a_big_archive_reads_exactly_the_rest(tmp_path):
    first = _big_backup(tmp_path / "arc")
    src = BackupContactSource(first, cache_dir=tmp_path / "c", restart_every=32 * 1024)
    batches = list(src.read(None, 4))
    full = [r["ID"] for b in batches for r in b.table.to_pylist()]
    for k in (0, 3, 6):
        cursor = json.loads(json.dumps(batches[k].cursor))
        again = BackupContactSource(first, cache_dir=tmp_path / "c", restart_every=32 * 1024)
        rest = [r["ID"] for b in again.read(cursor, 4) for r in b.table.to_pylist()]
        done = [r["ID"] for b in batches[:k + 1] for r in b.table.to_pylist()]
        assert done + rest == full, k
