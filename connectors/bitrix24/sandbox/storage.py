"""The sandbox portal's database, through SQLAlchemy Core: SQLite (a file, or in memory) by default, MariaDB/MySQL
as a self-hosted Bitrix24 uses, any other SQLAlchemy URL at your own risk.

Tables: one per CRM object type (crm_contact, crm_company, crm_deal, crm_dynamic_<etid> for each smart process),
with a column per field and one more per user field (added by ALTER TABLE when the field is created); multi-fields
(crm_fm), bindings (crm_binding), parent links (crm_parent_link), pipelines (crm_category), dictionaries and stages
(crm_status), smart-process types and their relations, user-field definitions, universal lists (lists_iblock,
lists_field, lists_element, lists_element_value) and users (b_user).

All access goes through :attr:`Store.lock` (one writer at a time, as SQLite needs anyway); each command is its own
transaction, so a batch is committed command by command, as on the real portal.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from .schema import (BASE_FIELDS, COMPANY, CONTACT, DEAL, UF_ENTITY_IDS, EntityDef, Field, build_entity,
                     parent_field)

ID_TYPE = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def sql_type(f: Field):
    if f.mult:
        return sa.Text()
    t = f.type
    if t == "double":
        return sa.Float()
    if t in ("date", "datetime"):
        return sa.DateTime()
    if t == "boolean":
        return sa.SmallInteger()
    if f.numeric:
        return sa.BigInteger()
    if t == "char":
        return sa.String(1)
    if f.long:
        return sa.Text()
    return sa.String(255)


def _id_col(name="ID"):
    return sa.Column(name, ID_TYPE, primary_key=True, autoincrement=True)


def _table(name: str, md: sa.MetaData, *items) -> sa.Table:
    # AUTOINCREMENT on SQLite: an id is never given out twice, even after the newest row was deleted (as MySQL)
    return sa.Table(name, md, *items, sqlite_autoincrement=True)


def define_static(md: sa.MetaData) -> dict[str, sa.Table]:
    T = {}
    T["fm"] = _table(
        "crm_fm", md, _id_col(),
        sa.Column("ENTITY_TYPE_ID", sa.Integer, nullable=False), sa.Column("ELEMENT_ID", sa.BigInteger, nullable=False),
        sa.Column("TYPE_ID", sa.String(16), nullable=False), sa.Column("VALUE_TYPE", sa.String(32)),
        sa.Column("VALUE", sa.String(255)), sa.Column("VALUE_NORM", sa.String(255)),
        sa.Index("ix_crm_fm_owner", "ENTITY_TYPE_ID", "ELEMENT_ID"),
        sa.Index("ix_crm_fm_value", "TYPE_ID", "VALUE_NORM"))
    T["binding"] = _table(
        "crm_binding", md, _id_col(),
        sa.Column("OWNER_TYPE", sa.Integer, nullable=False), sa.Column("OWNER_ID", sa.BigInteger, nullable=False),
        sa.Column("BOUND_TYPE", sa.Integer, nullable=False), sa.Column("BOUND_ID", sa.BigInteger, nullable=False),
        sa.Column("SORT", sa.Integer), sa.Column("IS_PRIMARY", sa.String(1)), sa.Column("ROLE_ID", sa.Integer),
        sa.Index("ix_crm_binding_owner", "OWNER_TYPE", "OWNER_ID"),
        sa.Index("ix_crm_binding_bound", "BOUND_TYPE", "BOUND_ID"))
    T["parent"] = _table(
        "crm_parent_link", md, _id_col(),
        sa.Column("CHILD_TYPE", sa.Integer, nullable=False), sa.Column("CHILD_ID", sa.BigInteger, nullable=False),
        sa.Column("PARENT_TYPE", sa.Integer, nullable=False), sa.Column("PARENT_ID", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("CHILD_TYPE", "CHILD_ID", "PARENT_TYPE", name="uq_crm_parent_link"),
        sa.Index("ix_crm_parent_link_parent", "PARENT_TYPE", "PARENT_ID"))
    T["category"] = _table(
        "crm_category", md, _id_col(),
        sa.Column("ENTITY_TYPE_ID", sa.Integer, nullable=False), sa.Column("NAME", sa.String(255)),
        sa.Column("SORT", sa.Integer), sa.Column("IS_DEFAULT", sa.String(1)), sa.Column("IS_SYSTEM", sa.String(1)),
        sa.Column("CODE", sa.String(255)), sa.Column("ORIGIN_ID", sa.String(255)),
        sa.Column("ORIGINATOR_ID", sa.String(255)), sa.Column("CREATED_DATE", sa.DateTime))
    T["status"] = _table(
        "crm_status", md, _id_col(),
        sa.Column("ENTITY_ID", sa.String(64), nullable=False), sa.Column("STATUS_ID", sa.String(64), nullable=False),
        sa.Column("NAME", sa.String(255)), sa.Column("NAME_INIT", sa.String(255)), sa.Column("SORT", sa.Integer),
        sa.Column("SYSTEM", sa.String(1)), sa.Column("CATEGORY_ID", sa.Integer), sa.Column("COLOR", sa.String(16)),
        sa.Column("SEMANTICS", sa.String(1)),
        sa.UniqueConstraint("ENTITY_ID", "STATUS_ID", name="uq_crm_status"))
    T["type"] = _table(
        "crm_type", md, _id_col(),
        sa.Column("ENTITY_TYPE_ID", sa.Integer, nullable=False, unique=True), sa.Column("TITLE", sa.String(255)),
        sa.Column("CODE", sa.String(255)), sa.Column("FLAGS", sa.Text), sa.Column("LINKED_UF", sa.Text),
        sa.Column("CUSTOM_SECTION_ID", sa.Integer), sa.Column("CREATED_BY", sa.BigInteger),
        sa.Column("UPDATED_BY", sa.BigInteger), sa.Column("CREATED_TIME", sa.DateTime),
        sa.Column("UPDATED_TIME", sa.DateTime))
    T["relation"] = _table(
        "crm_relation", md, _id_col(),
        sa.Column("PARENT_TYPE", sa.Integer, nullable=False), sa.Column("CHILD_TYPE", sa.Integer, nullable=False),
        sa.Column("IS_CHILDREN_LIST_ENABLED", sa.String(1)), sa.Column("IS_PREDEFINED", sa.String(1)),
        sa.UniqueConstraint("PARENT_TYPE", "CHILD_TYPE", name="uq_crm_relation"))
    T["uf"] = _table(
        "crm_userfield", md, _id_col(),
        sa.Column("ENTITY_ID", sa.String(64), nullable=False), sa.Column("FIELD_NAME", sa.String(64), nullable=False),
        sa.Column("USER_TYPE_ID", sa.String(64), nullable=False), sa.Column("XML_ID", sa.String(255)),
        sa.Column("SORT", sa.Integer), sa.Column("MULTIPLE", sa.String(1)), sa.Column("MANDATORY", sa.String(1)),
        sa.Column("SHOW_FILTER", sa.String(1)), sa.Column("SHOW_IN_LIST", sa.String(1)),
        sa.Column("EDIT_IN_LIST", sa.String(1)), sa.Column("IS_SEARCHABLE", sa.String(1)),
        sa.Column("SETTINGS", sa.Text), sa.Column("LABELS", sa.Text),
        sa.UniqueConstraint("ENTITY_ID", "FIELD_NAME", name="uq_crm_userfield"))
    T["uf_enum"] = _table(
        "crm_userfield_enum", md, _id_col(),
        sa.Column("FIELD_ID", sa.BigInteger, nullable=False), sa.Column("VALUE", sa.String(255)),
        sa.Column("DEF", sa.String(1)), sa.Column("SORT", sa.Integer), sa.Column("XML_ID", sa.String(255)))
    T["user"] = _table(
        "b_user", md, _id_col(),
        sa.Column("ACTIVE", sa.String(1)), sa.Column("NAME", sa.String(255)), sa.Column("LAST_NAME", sa.String(255)),
        sa.Column("SECOND_NAME", sa.String(255)), sa.Column("EMAIL", sa.String(255)),
        sa.Column("WORK_POSITION", sa.String(255)), sa.Column("PERSONAL_MOBILE", sa.String(255)),
        sa.Column("WORK_PHONE", sa.String(255)), sa.Column("UF_DEPARTMENT", sa.Text),
        sa.Column("USER_TYPE", sa.String(32)), sa.Column("XML_ID", sa.String(255)),
        sa.Column("DATE_REGISTER", sa.DateTime), sa.Column("LAST_LOGIN", sa.DateTime))
    T["iblock"] = _table(
        "lists_iblock", md, _id_col(),
        sa.Column("IBLOCK_TYPE_ID", sa.String(64), nullable=False), sa.Column("CODE", sa.String(255)),
        sa.Column("NAME", sa.String(255)), sa.Column("DESCRIPTION", sa.Text), sa.Column("SORT", sa.Integer),
        sa.Column("BIZPROC", sa.String(1)), sa.Column("SOCNET_GROUP_ID", sa.Integer),
        sa.UniqueConstraint("IBLOCK_TYPE_ID", "CODE", name="uq_lists_iblock_code"))
    T["lfield"] = _table(
        "lists_field", md, _id_col(),
        sa.Column("IBLOCK_ID", sa.BigInteger, nullable=False), sa.Column("NAME", sa.String(255)),
        sa.Column("TYPE", sa.String(64)), sa.Column("CODE", sa.String(255)), sa.Column("IS_REQUIRED", sa.String(1)),
        sa.Column("MULTIPLE", sa.String(1)), sa.Column("SORT", sa.Integer), sa.Column("SETTINGS", sa.Text))
    T["element"] = _table(
        "lists_element", md, _id_col(),
        sa.Column("IBLOCK_ID", sa.BigInteger, nullable=False), sa.Column("CODE", sa.String(255)),
        sa.Column("NAME", sa.String(255)), sa.Column("IBLOCK_SECTION_ID", sa.BigInteger),
        sa.Column("CREATED_BY", sa.BigInteger), sa.Column("MODIFIED_BY", sa.BigInteger),
        sa.Column("DATE_CREATE", sa.DateTime), sa.Column("TIMESTAMP_X", sa.DateTime),
        sa.UniqueConstraint("IBLOCK_ID", "CODE", name="uq_lists_element_code"))
    T["evalue"] = _table(
        "lists_element_value", md, _id_col(),
        sa.Column("ELEMENT_ID", sa.BigInteger, nullable=False), sa.Column("FIELD_ID", sa.BigInteger, nullable=False),
        sa.Column("VALUE", sa.Text),
        sa.Index("ix_lists_element_value_el", "ELEMENT_ID"),
        sa.Index("ix_lists_element_value_f", "FIELD_ID"))
    T["meta"] = sa.Table("sandbox_meta", md, sa.Column("KEY", sa.String(64), primary_key=True),
                         sa.Column("VALUE", sa.Text))
    return T


def make_engine(url: str | None) -> sa.Engine:
    url = url or "sqlite://"
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        memory = u.database in (None, "", ":memory:")
        kw = {"connect_args": {"check_same_thread": False}}
        if memory:
            kw["poolclass"] = StaticPool
        engine = sa.create_engine(u, **kw)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        return engine
    return sa.create_engine(u, pool_pre_ping=True, pool_size=8, max_overflow=8)


class Store:
    """The database and the schema of the portal it holds."""

    def __init__(self, url: str | None = None):
        self.url = url or "sqlite://"
        self.engine = make_engine(self.url)
        self.lock = threading.RLock()
        self.md = sa.MetaData()
        self.t = define_static(self.md)
        self.md.create_all(self.engine)
        self.entities: dict[int, EntityDef] = {}
        self.tables: dict[int, sa.Table] = {}
        self.types: dict[int, dict] = {}
        self.relations: list[dict] = []
        self._stmts: dict = {}
        from . import seed

        with self.lock, self.engine.begin() as conn:
            seed.ensure(self, conn)
        self.reload()

    # -------------------------------------------------------------- transactions
    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.lock, self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- schema of the CRM objects
    def reload(self) -> None:
        """(Re)build every entity definition and table from the type, relation and user-field rows."""
        with self.lock, self.engine.begin() as conn:
            types = [dict(r._mapping) for r in conn.execute(sa.select(self.t["type"]))]
            self.relations = [dict(r._mapping) for r in conn.execute(sa.select(self.t["relation"]))]
            ufs = [dict(r._mapping) for r in conn.execute(sa.select(self.t["uf"]).order_by(self.t["uf"].c.ID))]
            self.types = {}
            for row in types:
                self.types[row["ENTITY_TYPE_ID"]] = type_dict(row)
            defs: dict[int, EntityDef] = {}
            for etid in BASE_FIELDS:
                defs[etid] = self._build(etid, ufs)
            for etid in self.types:
                defs[etid] = self._build(etid, ufs)
            insp = sa.inspect(conn)
            existing = set(insp.get_table_names())
            tables = {}
            for etid, d in defs.items():
                md = sa.MetaData()
                cols = [_id_col()] + [sa.Column(f.upper, sql_type(f)) for f in d.columns() if f.upper != "ID"]
                idx = []
                if "ORIGIN_ID" in d.fields:
                    idx.append(sa.Index(f"ix_{d.table_name}_origin", "ORIGIN_ID"))
                table = _table(d.table_name, md, *cols, *idx)
                if d.table_name not in existing:
                    md.create_all(conn)
                else:
                    have = {c["name"].upper() for c in insp.get_columns(d.table_name)}
                    for col in cols:
                        if col.name.upper() not in have:
                            add_column(conn, d.table_name, col)
                tables[etid] = table
            self.entities = defs
            self.tables = tables
            self._stmts = {}

    def _build(self, etid: int, ufs: list[dict]) -> EntityDef:
        type_row = self.types.get(etid)
        if etid in UF_ENTITY_IDS:
            uf_entity = UF_ENTITY_IDS[etid]
        else:
            uf_entity = f"CRM_{type_row['id']}"
        rows = [uf_row(r) for r in ufs if r["ENTITY_ID"] == uf_entity]
        table_name = {CONTACT: "crm_contact", COMPANY: "crm_company", DEAL: "crm_deal"}.get(etid, f"crm_dynamic_{etid}")
        d = build_entity(etid, table_name, rows, type_row)
        for rel in self.relations:
            # a relation P -> C gives C the field parentId<P> (PARENT_ID_<P>); the predefined client relations of a
            # smart process (parents 3 and 4) are its contactId / companyId fields instead
            if rel["CHILD_TYPE"] == etid and rel["IS_PREDEFINED"] != "Y":
                pf = parent_field(rel["PARENT_TYPE"], d.legacy)
                d.fields[pf.upper] = pf
                d.by_camel[pf.camel] = pf
        return d

    def stmt(self, key, build):
        """A prepared statement (built once per schema version: building and caching Core statements costs far
        more than running them)."""
        st = self._stmts.get(key)
        if st is None:
            st = self._stmts[key] = build()
        return st

    def entity(self, etid: int) -> EntityDef | None:
        return self.entities.get(etid)

    def table(self, etid: int) -> sa.Table:
        return self.tables[etid]

    # -------------------------------------------------------------- meta
    def meta_get(self, conn: Connection, key: str) -> str | None:
        row = conn.execute(sa.select(self.t["meta"].c.VALUE).where(self.t["meta"].c.KEY == key)).first()
        return None if row is None else row[0]

    def meta_set(self, conn: Connection, key: str, value: str) -> None:
        m = self.t["meta"]
        if conn.execute(sa.update(m).where(m.c.KEY == key).values(VALUE=value)).rowcount == 0:
            conn.execute(sa.insert(m).values(KEY=key, VALUE=value))


def add_column(conn: Connection, table_name: str, col: sa.Column) -> None:
    prep = conn.dialect.identifier_preparer
    ctype = col.type.compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {prep.quote(table_name)} ADD COLUMN {prep.quote(col.name)} {ctype} NULL"))


def uf_row(r: dict) -> dict:
    labels = json.loads(r["LABELS"] or "{}")
    return {"id": r["ID"], "entity_id": r["ENTITY_ID"], "field_name": r["FIELD_NAME"],
            "user_type_id": r["USER_TYPE_ID"], "xml_id": r["XML_ID"], "sort": r["SORT"], "multiple": r["MULTIPLE"],
            "mandatory": r["MANDATORY"], "settings": json.loads(r["SETTINGS"] or "{}"), "labels": labels,
            "label": labels.get("EDIT_FORM_LABEL") or labels.get("LIST_COLUMN_LABEL") or r["FIELD_NAME"]}


TYPE_FLAGS = ("isCategoriesEnabled", "isStagesEnabled", "isBeginCloseDatesEnabled", "isClientEnabled",
              "isUseInUserfieldEnabled", "isLinkWithProductsEnabled", "isMycompanyEnabled", "isDocumentsEnabled",
              "isSourceEnabled", "isObserversEnabled", "isRecyclebinEnabled", "isAutomationEnabled",
              "isBizProcEnabled", "isSetOpenPermissions", "isPaymentsEnabled", "isCountersEnabled")


def type_dict(row: dict) -> dict:
    flags = json.loads(row["FLAGS"] or "{}")
    d = {"id": row["ID"], "entityTypeId": row["ENTITY_TYPE_ID"], "title": row["TITLE"], "code": row["CODE"],
         "createdBy": row["CREATED_BY"], "updatedBy": row["UPDATED_BY"], "createdTime": row["CREATED_TIME"],
         "updatedTime": row["UPDATED_TIME"], "customSectionId": row["CUSTOM_SECTION_ID"],
         "linkedUserFields": json.loads(row["LINKED_UF"] or "{}")}
    for f in TYPE_FLAGS:
        d[f] = flags.get(f, "N")
    return d
