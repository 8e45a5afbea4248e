"""The Bitrix24 loader: a Sink for companies, contacts, deals, sites and tickets.

Where records go
    company -> crm.company.*, contact -> crm.contact.*, deal -> crm.deal.* (legacy CRM methods);
    site, ticket -> a smart process (crm.item.*, ``store_as: smart_process``, the default) or a universal list
    (lists.element.*, ``store_as: list``), per pipeline in ``target_options:`` (see options.py).

Idempotency
    Every record carries its key: ORIGINATOR_ID = the stream's origin, ORIGIN_ID = the source id (originatorId /
    originId on smart-process items; ELEMENT_CODE = the source id on list elements). ``lookup`` finds records by
    that key with filtered list calls (49 keys a command, 50 commands a request), so the engine can adopt what an
    interrupted batch already created. A batch whose answer is lost (timeout, dropped connection, HTML, code-less
    5xx) is reconciled the same way before anything is created again.

Creates go 50 commands to a ``batch`` request (several requests in flight where the client allows). A command's
error becomes a reject of that record with Bitrix24's own code and text; the rest of the batch loads.

Updates (the engine sends only records whose content hash changed) send only the fields that changed. To tell which,
the sink keeps a hash per field and record in the state store (table ``etl_b24_fields``); a record without stored
hashes (loaded before, or adopted by lookup) gets all its mapped fields. Multi-fields (PHONE, EMAIL, WEB) are never
re-added: the sink reads the entries the record has (with their IDs), keeps the ones whose value stays, deletes the
ones that went (``{ID, DELETE: Y}``) and adds only new values. Company and contact bindings change through
``crm.contact.company.items.set`` / ``crm.deal.contact.items.set`` (which replace the set). List elements are
overwritten whole by ``lists.element.update``, so their updates send every mapped field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from connectors.base import HASH, SOURCE_ID, TARGET_ID, Sink, StreamInfo, TerminalError, TransientError, WriteResult, \
    make_rejects, record_json
from connectors.bitrix24.client import BATCH_MAX, PAGE, BatchAnswer, BatchOutcomeUnknown, Bitrix24Client, as_map
from connectors.bitrix24.errors import Bitrix24Error, MethodError, OutcomeUnknown
from connectors.bitrix24.options import Bitrix24Options, parse_options, tz_of
from connectors.bitrix24.users import UserMatcher, normal
from etl import secrets

log = logging.getLogger("crm_etl.bitrix24")

LOOKUP_CHUNK = 49  # keys per filtered list command (a full page of 50 means: more rows than keys, page on)
RECONCILE_ROUNDS = 4
ETYPE = {"deal": 2, "contact": 3, "company": 4}
LEGACY = {"company": "crm.company", "contact": "crm.contact", "deal": "crm.deal"}
MULTI = {"phone": "PHONE", "email": "EMAIL", "web": "WEB"}
_DATE_ERROR = re.compile(r"date|time", re.I)

# canonical field -> Bitrix24 field, per entity and API; `None`: not sent unless `fields:` maps it
LEGACY_FIELDS = {
    "company": {"title": "TITLE", "address": "ADDRESS", "revenue": "REVENUE", "comments": "COMMENTS"},
    "contact": {"last_name": "LAST_NAME", "name": "NAME", "second_name": "SECOND_NAME", "birthdate": "BIRTHDATE",
                "post": "POST", "address": "ADDRESS", "comments": "COMMENTS"},
    "deal": {"title": "TITLE", "amount": "OPPORTUNITY", "currency": "CURRENCY_ID", "opened_at": "BEGINDATE",
             "closed_at": "CLOSEDATE", "is_closed": "CLOSED", "comments": "COMMENTS"},
}
ITEM_FIELDS = {
    "site": {"title": "title"},
    "ticket": {"title": "title", "opened_at": "begindate", "closed_at": "closedate"},
}
LIST_FIELDS = {"site": {"title": "NAME"}, "ticket": {"title": "NAME"}}
# links the sink writes itself (link id column -> field), per API
LEGACY_LINKS = {"contact": {"company_id": "COMPANY_ID"},
                "deal": {"company_id": "COMPANY_ID", "contact_id": "CONTACT_ID"}}
ITEM_LINKS = {"company_id": "companyId", "contact_id": "contactId"}


# ---------------------------------------------------------------------------------------------- values
def _fmt_dt(v: Any, tz) -> str:
    if isinstance(v, datetime):
        if tz is not None and v.tzinfo is None:
            v = v.replace(tzinfo=tz)
        return v.isoformat(timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def _value(v: Any, tz, *, yn: bool = True) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return ("Y" if v else "N") if yn else v
    if isinstance(v, (datetime, date)):
        return _fmt_dt(v, tz)
    if isinstance(v, float):
        return v if v == v else None
    return v


def split_multi(text: Any) -> list[str]:
    """';'-separated phones/e-mails -> distinct values, in order."""
    if text is None:
        return []
    out, seen = [], set()
    for part in str(text).split(";"):
        p = part.strip()
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    return out


def _field_hash(v: Any) -> str:
    return hashlib.blake2b(repr(v).encode("utf-8"), digest_size=6).hexdigest()


def _reject(row: dict, reason: str, message: str, fld: str | None = None, value: Any = None) -> dict:
    return dict(stage="load", reason=reason, message=secrets.mask(message), file=row.get("_file"),
                line=row.get("_line"), field=fld, value=None if value is None else str(value),
                source_id=row.get(SOURCE_ID), record=record_json(row))


def _error_text(err: Bitrix24Error) -> str:
    code = err.code or ""
    desc = err.description or str(err)
    return f"Bitrix24 {err.method}: {code + ': ' if code else ''}{desc}"


def _to_id(v: Any) -> str | None:
    if isinstance(v, dict):
        v = (v.get("item") or {}).get("id") if "item" in v else v.get("id") or v.get("ID")
    if v is None or v is False or v == "":
        return None
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- field hashes
class FieldHashes:
    """Per record and field, a hash of the value last written (to send only what changed on update)."""

    def __init__(self, url: str | None, pipeline: str):
        self.pipeline = pipeline
        self._mem: dict[str, dict] = {}
        self.engine = None
        if url:
            import sqlalchemy as sa

            kwargs: dict[str, Any] = {"future": True}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30}
            self.engine = sa.create_engine(url, **kwargs)
            md = sa.MetaData()
            self.table = sa.Table("etl_b24_fields", md,
                                  sa.Column("pipeline", sa.String(255), primary_key=True),
                                  sa.Column("source_id", sa.String(255), primary_key=True),
                                  sa.Column("target_id", sa.String(64), nullable=False),
                                  sa.Column("hashes", sa.Text, nullable=False))
            md.create_all(self.engine)

    def get(self, sids: list[str]) -> dict[str, dict]:
        if self.engine is None:
            return {s: self._mem[s] for s in sids if s in self._mem}
        import sqlalchemy as sa

        out = {}
        t = self.table
        with self.engine.connect() as c:
            for i in range(0, len(sids), 500):
                part = sids[i:i + 500]
                for sid, h in c.execute(sa.select(t.c.source_id, t.c.hashes).where(t.c.pipeline == self.pipeline)
                                        .where(t.c.source_id.in_(part))):
                    out[sid] = json.loads(h)
        return out

    def put(self, rows: list[tuple[str, str, dict]]) -> None:
        if not rows:
            return
        if self.engine is None:
            for sid, _, h in rows:
                self._mem[sid] = h
            return
        import sqlalchemy as sa

        t = self.table
        with self.engine.begin() as c:
            sids = [r[0] for r in rows]
            for i in range(0, len(sids), 500):
                c.execute(t.delete().where(t.c.pipeline == self.pipeline).where(t.c.source_id.in_(sids[i:i + 500])))
            c.execute(t.insert(), [dict(pipeline=self.pipeline, source_id=s, target_id=tid,
                                        hashes=json.dumps(h, sort_keys=True)) for s, tid, h in rows])

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


# ---------------------------------------------------------------------------------------------- plans
@dataclass
class _Create:
    row: dict
    fields: dict
    dated: bool  # carries historical dates (IMPORT / batchImport)
    hashes: dict


@dataclass
class _Update:
    row: dict
    tid: str
    hashes: dict
    changed: set[str] | None  # None: unknown, send all
    commands: list[tuple[str, dict]] = field(default_factory=list)


class Bitrix24Sink(Sink):
    """Loads one pipeline's records into a Bitrix24 portal through :class:`Bitrix24Client`."""

    def __init__(self, client: Bitrix24Client | Callable[[], Bitrix24Client], *, state_url: str | None = None,
                 link_targets: dict[str, dict] | None = None, name: str = "bitrix24"):
        self._client_arg = client
        self._client: Bitrix24Client | None = client if isinstance(client, Bitrix24Client) else None
        self.state_url = state_url
        self.link_targets = link_targets or {}
        self.name = name
        self.stream: StreamInfo | None = None
        self.opts: Bitrix24Options | None = None
        self._ready_read = False
        self._ready_write = False
        self._lock = threading.Lock()
        self.hashes: FieldHashes | None = None
        self.stats: dict[str, int] = {"created": 0, "updated": 0, "rejected": 0, "reconciled": 0, "adopted": 0,
                                      "skipped_updates": 0, "dates_dropped": 0, "duplicates_found": 0}

    # ------------------------------------------------------------------ setup
    @property
    def client(self) -> Bitrix24Client:
        if self._client is None:
            self._client = self._client_arg()  # type: ignore[operator]
        return self._client

    def open(self, stream: StreamInfo) -> None:
        from schemas import get_entity

        self.stream = stream
        self.entity = get_entity(stream.entity)
        try:
            self.opts = parse_options(stream.options, self.entity)
        except ValueError as e:
            raise TerminalError(f"pipeline {stream.pipeline!r}: target_options: {e}") from None
        self.ename = self.entity.name
        opts = self.opts
        if self.ename in LEGACY:
            self.api = "legacy"
        else:
            self.api = "list" if opts.store_as == "list" else "item"
        self.tz = tz_of(opts.timezone) if opts.timezone else None
        self.columns = set(stream.schema.names)
        self.hash_fields = [f for f in stream.schema.names]
        # the field map: canonical -> target, defaults first, then the pipeline's `fields:`
        base = {"legacy": LEGACY_FIELDS.get(self.ename, {}), "item": ITEM_FIELDS.get(self.ename, {}),
                "list": LIST_FIELDS.get(self.ename, {})}[self.api]
        fmap = dict(base)
        if self.api == "list":  # every other field and link id as a property with its own code, made on demand
            for f in stream.schema.names:
                if f not in fmap:
                    fmap[f] = "PROPERTY_" + f.upper()
        for k, v in opts.fields.items():
            if v is None:
                fmap.pop(k, None)
            else:
                fmap[k] = v
        self.fmap = fmap
        self.multi = {k: v for k, v in MULTI.items() if k in self.columns and k not in opts.fields} \
            if self.api == "legacy" else {}
        if self.api == "legacy":
            self.links = {k: v for k, v in LEGACY_LINKS.get(self.ename, {}).items()
                          if k in self.columns and k not in opts.fields}
        elif self.api == "item":
            self.links = {k: v for k, v in ITEM_LINKS.items() if k in self.columns and k not in opts.fields}
        else:
            self.links = {}
        self.parent_fields = {}
        self.hashes = FieldHashes(self.state_url, stream.pipeline)
        self.users: UserMatcher | None = None
        self.type_id: int | None = ETYPE.get(self.ename)
        self.category_id: int | None = None
        self.list_id: int | None = None
        self._categories: dict[str, int] = {}  # deals: category name (normalised) -> id
        self._stage_ids: dict[int, set[str] | None] = {}  # category id -> stage STATUS_IDs (None: unknown)
        self._existing_fields: set[str] | None = None
        self._missing_target = False  # the smart process / list does not exist (yet): nothing to look up

    def close(self) -> None:
        if self.hashes is not None:
            self.hashes.close()
        if self._client is not None and not isinstance(self._client_arg, Bitrix24Client):
            self._client.close()
            self._client = None

    def _ensure(self, writing: bool) -> None:
        with self._lock:
            if writing and self._ready_write:
                return
            if not writing and (self._ready_read or self._ready_write):
                return
            if self.api == "item":
                parents = self._parent_types(strict=writing)
                self._resolve_type(create=writing, parents=parents)
                if writing:
                    self._check_item_fields()
            elif self.api == "list":
                self._resolve_list(create=writing)
                if writing:
                    self._ensure_properties()
            if writing:
                if "responsible_name" in self.columns and "responsible_name" not in self.opts.fields \
                        and self.api != "list":
                    self._load_users()
                if self.api == "legacy":
                    self._ensure_user_fields()
                self._ready_write = True
            self._ready_read = True

    def _parent_types(self, strict: bool = True) -> dict[str, int]:
        """Link id column -> the parent smart process's entityTypeId (parentId<etid>): from `parents:`, else for
        the `site` link from the site pipeline's own target_options."""
        out: dict[str, int] = {}
        for lname, spec in self.opts.parents.items():
            etid = self._find_type(spec, create=False)
            if etid is None:
                if not strict:
                    continue
                raise TerminalError(f"{self.stream.pipeline}: parents.{lname}: no smart process {spec!r} in the "
                                    "portal (load that pipeline first)")
            out[f"{lname}_id"] = etid
        col = "site_id"
        if col in self.columns and col not in out and col not in self.opts.fields:
            spec = self._linked_smart_process("site")
            if spec is not None:
                etid = self._find_type(spec, create=False)
                if etid is None and strict:
                    raise TerminalError(f"{self.stream.pipeline}: the sites' smart process {spec!r} is not in the "
                                        "portal (load the site pipeline first)")
                if etid is not None:
                    out[col] = etid
        self.parent_fields = {c: f"parentId{e}" for c, e in out.items()}
        return out

    def _linked_smart_process(self, lname: str):
        """The smart process the pipeline behind link ``lname`` loads into (from its target_options)."""
        lt = self.link_targets.get(lname)
        if not lt:
            return None
        o = lt.get("options") or {}
        if (o.get("store_as") or "smart_process") != "smart_process":
            return None
        sp = o.get("smart_process") or {}
        return sp.get("entity_type_id") or sp.get("title")

    # ------------------------------------------------------------------ portal setup (types, lists, fields)
    def _types(self) -> list[dict]:
        rows = list(self.client.list_pages("crm.type.list", {}, unwrap="types"))
        return [r for r in rows if isinstance(r, dict)]

    def _find_type(self, spec: str | int, create: bool) -> int | None:
        if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
            return int(spec)
        for t in self._types():
            if str(t.get("title", "")).strip().lower() == str(spec).strip().lower():
                return int(t["entityTypeId"])
        return None

    def _type_row(self, etid: int) -> dict | None:
        return next((t for t in self._types() if int(t.get("entityTypeId") or 0) == etid), None)

    def _resolve_type(self, create: bool, parents: dict[str, int]) -> None:
        sp = self.opts.smart_process
        if sp.entity_type_id is not None:
            self.type_id = sp.entity_type_id
        else:
            self.type_id = self._find_type(sp.title, False)
            if self.type_id is None:
                if not create:
                    self._missing_target = True
                    return
                if not sp.create:
                    raise TerminalError(f"{self.stream.pipeline}: no smart process titled {sp.title!r} in the portal "
                                        "(set smart_process.create: true or create it)")
                rel = [{"entityTypeId": e, "isChildrenListEnabled": "Y"} for e in sorted(set(parents.values()))]
                fields = {"title": sp.title, "isStagesEnabled": "Y", "isCategoriesEnabled": "N",
                          "isClientEnabled": "Y", "isBeginCloseDatesEnabled": "Y", "isUseInUserfieldEnabled": "Y"}
                if rel:
                    fields["relations"] = {"parent": rel}
                self.type_id = self._setup_write(
                    ("crm.type.add", {"fields": fields}),
                    lambda r: int(((r or {}).get("type") or {}).get("entityTypeId")),
                    lambda: self._find_type(sp.title, False))
        self._missing_target = False
        if parents:
            row = self._type_row(self.type_id) or {}
            have = {int(r.get("entityTypeId") or 0) for r in
                    as_map((row.get("relations") or {}).get("parent") if isinstance(row.get("relations"), dict)
                           else {}).values() if isinstance(r, dict)}
            lacking = sorted(set(parents.values()) - have)
            if row and lacking:
                raise TerminalError(f"{self.stream.pipeline}: smart process {self.type_id} has no parent relation to "
                                    f"{', '.join(map(str, lacking))} (parentId links would be dropped): add the "
                                    "relation in the portal")
        self.category_id = sp.category
        if self.category_id is None:
            cats = list(self.client.list_pages("crm.category.list", {"entityTypeId": self.type_id},
                                               unwrap="categories"))
            default = next((c for c in cats if str(c.get("isDefault", "")).upper() in ("Y", "TRUE", "1")), None)
            self.category_id = int(default["id"]) if default else (int(cats[0]["id"]) if cats else 0)

    def _check_item_fields(self) -> None:
        """Every field the map names must exist on the smart process (the portal ignores unknown names)."""
        res = self.client.call("crm.item.fields", {"entityTypeId": self.type_id}).result
        fields = as_map((res or {}).get("fields") if isinstance(res, dict) else {})
        have = set(fields) | {str(v.get("upperName")) for v in fields.values() if isinstance(v, dict)}
        missing = [t for t in self.fmap.values() if t not in have]
        if missing:
            raise TerminalError(f"{self.stream.pipeline}: smart process {self.type_id} has no field(s) "
                                f"{', '.join(missing)} (create the user fields in the portal, or fix "
                                "target_options.fields)")

    def _resolve_list(self, create: bool) -> None:
        lo = self.opts.list
        if lo.iblock_id is not None:
            self.list_id = lo.iblock_id
            return
        found = self._find_list()
        if found is None:
            if not create:
                self._missing_target = True
                return
            if not lo.create:
                raise TerminalError(f"{self.stream.pipeline}: no universal list {lo.iblock_code!r} "
                                    "(set list.create: true or create it)")
            params = {"IBLOCK_TYPE_ID": lo.iblock_type_id, "IBLOCK_CODE": lo.iblock_code,
                      "FIELDS": {"NAME": lo.name or lo.iblock_code, "CODE": lo.iblock_code}}
            if lo.socnet_group_id:
                params["SOCNET_GROUP_ID"] = lo.socnet_group_id
            found = self._setup_write(("lists.add", params), lambda r: int(r), self._find_list)
        self._missing_target = False
        self.list_id = found

    def _find_list(self) -> int | None:
        lo = self.opts.list
        try:
            ans = self.client.call("lists.get", {"IBLOCK_TYPE_ID": lo.iblock_type_id, "IBLOCK_CODE": lo.iblock_code})
        except MethodError:
            return None
        rows = ans.result if isinstance(ans.result, list) else list(as_map(ans.result).values())
        for r in rows:
            if isinstance(r, dict) and str(r.get("CODE", "")) == lo.iblock_code:
                return int(r["ID"])
        return int(rows[0]["ID"]) if len(rows) == 1 and isinstance(rows[0], dict) and "ID" in rows[0] else None

    def _list_base(self) -> dict:
        lo = self.opts.list
        return {"IBLOCK_TYPE_ID": lo.iblock_type_id, "IBLOCK_ID": self.list_id}

    def _list_properties(self) -> dict[str, str]:
        """Property code (and PROPERTY_<id>) -> PROPERTY_<id> of the list's fields."""
        res = self.client.call("lists.field.get", self._list_base()).result
        out = {}
        for key, f in as_map(res).items():
            if not isinstance(f, dict) or not str(key).upper().startswith("PROPERTY_"):
                continue
            out[str(key).upper()] = str(key).upper()
            if f.get("CODE"):
                out["PROPERTY_" + str(f["CODE"]).upper()] = str(key).upper()
        return out

    def _ensure_properties(self) -> None:
        """Map PROPERTY_<code> targets to PROPERTY_<id>, adding missing properties (lists.field.add)."""
        have = self._list_properties()
        types = {f.name: f.type for f in self.entity.fields}
        canon = {v: k for k, v in self.fmap.items()}
        for target in [t for t in self.fmap.values() if t.upper().startswith("PROPERTY_")]:
            key = target.upper()
            if key in have:
                continue
            code = key[len("PROPERTY_"):]
            if code.isdigit():
                raise TerminalError(f"{self.stream.pipeline}: list {self.list_id} has no property {target}")
            if not self.opts.create_user_fields:
                raise TerminalError(f"{self.stream.pipeline}: list {self.list_id} has no property with code {code} "
                                    "(create it, or set create_user_fields: true)")
            t = types.get(canon.get(target, ""), pa.string())
            ltype = ("N" if pa.types.is_floating(t) or pa.types.is_integer(t) else
                     "S:DateTime" if pa.types.is_timestamp(t) else "S:Date" if pa.types.is_date(t) else "S")
            self._setup_write(("lists.field.add", {**self._list_base(), "FIELDS": {
                "NAME": canon.get(target, code), "TYPE": ltype, "CODE": code, "MULTIPLE": "N"}}),
                lambda r: str(r), lambda: self._list_properties().get(key))
            have = self._list_properties()
        self.fmap = {k: (have.get(v.upper(), v) if v.upper().startswith("PROPERTY_") else v)
                     for k, v in self.fmap.items()}

    def _setup_write(self, command: tuple[str, dict], parse: Callable[[Any], Any], find: Callable[[], Any]) -> Any:
        """A one-off write (a type, a list, a category, a user field): on an unknown outcome look first."""
        for _ in range(RECONCILE_ROUNDS):
            try:
                return parse(self.client.call(*command).result)
            except OutcomeUnknown:
                found = find()
                if found is not None:
                    return found
        raise TransientError(f"{command[0]}: no answer after {RECONCILE_ROUNDS} attempts")

    def _ensure_user_fields(self) -> None:
        wanted = [t for t in self.fmap.values() if t.upper().startswith("UF_CRM_")]
        if not wanted:
            return
        prefix = LEGACY[self.ename]
        have = set(as_map(self.client.call(f"{prefix}.fields").result))
        missing = [w for w in wanted if w not in have]
        if not missing:
            return
        if not self.opts.create_user_fields:
            raise TerminalError(f"{self.stream.pipeline}: the portal has no field(s) {', '.join(missing)} on "
                                f"{self.ename} (create them, or set create_user_fields: true)")
        types = {f.name: f.type for f in self.entity.fields}
        canon = {v: k for k, v in self.fmap.items()}
        for w in missing:
            t = types.get(canon.get(w, ""), pa.string())
            utype = ("double" if pa.types.is_floating(t) else "integer" if pa.types.is_integer(t) else
                     "boolean" if pa.types.is_boolean(t) else "datetime" if pa.types.is_timestamp(t) else
                     "date" if pa.types.is_date(t) else "string")
            name = w.upper()[len("UF_CRM_"):]
            self._setup_write((f"{prefix}.userfield.add",
                               {"fields": {"FIELD_NAME": name, "USER_TYPE_ID": utype, "XML_ID": w,
                                           "LABEL": canon.get(w, name)}}),
                              lambda r: r, lambda: w if w in set(as_map(self.client.call(f"{prefix}.fields").result))
                              else None)

    def _load_users(self) -> None:
        ro = self.opts.responsible
        rows = []
        if ro.lookup:
            rows = list(self.client.list_pages("user.get", {}))
        self.users = UserMatcher.from_api(rows, ro.map)

    # ------------------------------------------------------------------ deals: categories and stages
    def _category(self, direction: Any) -> int:
        o = self.opts
        if direction is None or str(direction).strip() == "":
            d = o.default_category
            if d is None:
                return 0
            direction = d
        spec = o.categories.get(str(direction), direction)
        if isinstance(spec, int) or str(spec).isdigit():
            return int(spec)
        key = normal(str(spec))
        if not self._categories:
            self._load_categories()
        if key in self._categories:
            return self._categories[key]
        if not o.create_categories:
            raise KeyError(spec)
        cid = self._setup_write(
            ("crm.category.add", {"entityTypeId": 2, "fields": {"name": str(spec)}}),
            lambda r: int(((r or {}).get("category") or {}).get("id")),
            lambda: (self._load_categories(), self._categories.get(key))[1])
        self._categories[key] = cid
        return cid

    def _load_categories(self) -> None:
        for c in self.client.list_pages("crm.category.list", {"entityTypeId": 2}, unwrap="categories"):
            try:
                self._categories[normal(str(c.get("name", "")))] = int(c["id"])
            except (KeyError, TypeError, ValueError):
                continue

    def _stages_of(self, entity_id: str, key: int) -> set[str] | None:
        if key not in self._stage_ids:
            rows = list(self.client.list_pages("crm.status.list", {"filter": {"ENTITY_ID": entity_id}}))
            ids = {str(r.get("STATUS_ID")) for r in rows if isinstance(r, dict) and r.get("STATUS_ID")}
            self._stage_ids[key] = ids or None
        return self._stage_ids[key]

    def _deal_stage(self, cat: int, direction: Any, stage: Any) -> str | None:
        """STAGE_ID for a deal; None: leave the portal's default. Raises LookupError(message) on an unknown one."""
        if stage is None or str(stage).strip() == "":
            return None
        table = self.opts.stages.get(str(direction)) if direction is not None else None
        if table is None:
            table = self.opts.stages.get("*") or self.opts.stages.get("default")
        if not self.opts.stages:
            return None
        code = (table or {}).get(str(stage))
        if code is None:
            if self.opts.unknown_stage == "default":
                return None
            raise LookupError(f"stage {stage!r} of direction {direction!r} has no code in target_options.stages")
        sid = code if (cat == 0 or ":" in code) else f"C{cat}:{code}"
        known = self._stages_of("DEAL_STAGE" if cat == 0 else f"DEAL_STAGE_{cat}", cat)
        if known is not None and sid not in known:
            raise LookupError(f"stage {sid!r} (from {stage!r}) is not a stage of deal category {cat} "
                              f"(stages: {', '.join(sorted(known))})")
        return sid

    def _item_stage(self, status: Any) -> str | None:
        if status is None or str(status).strip() == "" or not self.opts.stages:
            return None
        code = self.opts.stages.get(str(status))
        if code is None:
            if self.opts.unknown_stage == "default":
                return None
            raise LookupError(f"status {status!r} has no stage code in target_options.stages")
        prefix = f"DT{self.type_id}_{self.category_id}:"
        sid = code if code.startswith("DT") else prefix + code
        known = self._stages_of(f"DYNAMIC_{self.type_id}_STAGE_{self.category_id}", -1)
        if known is not None and sid not in known:
            raise LookupError(f"stage {sid!r} (from {status!r}) is not a stage of smart process {self.type_id} "
                              f"(stages: {', '.join(sorted(known))})")
        return sid

    # ------------------------------------------------------------------ a record -> fields
    def _row_hashes(self, row: dict) -> dict:
        return {f: _field_hash(row.get(f)) for f in self.hash_fields}

    def _assigned(self, row: dict) -> tuple[int | None, str | None]:
        """(user id, problem)"""
        name = row.get("responsible_name")
        ro = self.opts.responsible
        if self.users is None:
            return ro.default, None
        uid = self.users.match(name)
        if uid is not None:
            return uid, None
        if name is not None and str(name).strip() and ro.unknown == "reject":
            return None, f"responsible {name!r} matches no Bitrix24 user (target_options.responsible)"
        return ro.default, None

    def _fields(self, row: dict, only: set[str] | None, creating: bool) -> dict:
        """Target fields of a record (only the canonical fields in ``only``, when given). Raises LookupError."""
        api = self.api
        yn = True
        out: dict[str, Any] = {}
        tz = self.tz
        values = self.opts.values

        def want(f: str) -> bool:
            return f in self.columns and (only is None or f in only)

        for canon, target in self.fmap.items():
            if not want(canon):
                continue
            v = row.get(canon)
            if canon in values and v is not None:
                v = values[canon].get(str(v), v)
            v = _value(v, tz, yn=yn)
            if v is None:
                if creating:
                    continue
                v = ""
            out[target] = v
        for col, target in self.links.items():
            if want(col):
                v = row.get(col)
                if v is None and creating:
                    continue
                if self.api == "legacy" and not creating and col in ("company_id",) and self.ename == "contact":
                    continue  # contact -> company changes through crm.contact.company.items.set
                if self.api == "legacy" and not creating and col == "contact_id" and self.ename == "deal":
                    continue  # deal -> contact changes through crm.deal.contact.items.set
                out[target] = int(v) if v is not None else ("" if api == "legacy" else 0)
        for col, target in self.parent_fields.items():
            if want(col):
                v = row.get(col)
                if v is None and creating:
                    continue
                out[target] = int(v) if v is not None else 0
        if "responsible_name" in self.columns and "responsible_name" not in self.opts.fields and \
                (only is None or "responsible_name" in only) and api != "list":
            uid, problem = self._assigned(row)
            if problem:
                raise LookupError(problem)
            if uid is not None:
                out["ASSIGNED_BY_ID" if api == "legacy" else "assignedById"] = uid
        if api == "legacy":
            for f in self.multi:
                if creating and want(f):
                    vals = split_multi(row.get(f))
                    if vals:
                        vtype = getattr(self.opts, f"{f}_type")
                        out[MULTI[f]] = [{"VALUE": v, "VALUE_TYPE": vtype} for v in vals]
            if creating:
                out["ORIGINATOR_ID"] = self.stream.origin
                out["ORIGIN_ID"] = row[SOURCE_ID]
            if self.ename == "deal" and "direction" not in self.opts.fields and "stage" not in self.opts.fields:
                if only is None or {"direction", "stage"} & only:
                    cat = self._category_of(row)
                    stage = self._deal_stage(cat, row.get("direction"), row.get("stage"))
                    if creating:
                        out["CATEGORY_ID"] = cat
                    if stage is not None:
                        out["STAGE_ID"] = stage
        elif api == "item":
            if creating:
                out["originatorId"] = self.stream.origin
                out["originId"] = row[SOURCE_ID]
            if self.ename == "ticket" and "status" in self.columns and "status" not in self.opts.fields and \
                    (only is None or "status" in only):
                stage = self._item_stage(row.get("status"))
                if stage is not None:
                    out["stageId"] = stage
        return out

    def _category_of(self, row: dict) -> int:
        try:
            return self._category(row.get("direction"))
        except KeyError as e:
            raise LookupError(f"direction {row.get('direction')!r}: no deal category {e.args[0]!r} in the portal "
                              "(create_categories is off)") from None

    def _dates(self, row: dict) -> dict:
        if not self.opts.historical_dates:
            return {}
        c, m = row.get("created_at"), row.get("modified_at")
        out = {}
        names = ("DATE_CREATE", "DATE_MODIFY") if self.api == "legacy" else ("createdTime", "updatedTime")
        if c is not None and "created_at" in self.columns and "created_at" not in self.opts.fields:
            out[names[0]] = _fmt_dt(c, self.tz)
            if m is not None and "modified_at" in self.columns and "modified_at" not in self.opts.fields and m >= c:
                out[names[1]] = _fmt_dt(m, self.tz)
        return out

    # ------------------------------------------------------------------ commands
    def _add_command(self, c: _Create) -> tuple[str, dict]:
        if self.api == "legacy":
            params = {"REGISTER_SONET_EVENT": "N"}
            fields = dict(c.fields)
            if c.dated:
                params["IMPORT"] = "Y"
                fields.update(self._dates(c.row))
            return f"{LEGACY[self.ename]}.add", {"fields": fields, "params": params}
        if self.api == "item":
            p: dict[str, Any] = {"entityTypeId": self.type_id, "fields": dict(c.fields)}
            if any(k.upper().startswith("UF_CRM_") for k in c.fields):
                p["useOriginalUfNames"] = "Y"
            return "crm.item.add", p
        props = {k: v for k, v in c.fields.items() if k != "NAME"}
        return "lists.element.add", {**self._list_base(), "ELEMENT_CODE": c.row[SOURCE_ID],
                                     "FIELDS": {"NAME": c.fields.get("NAME") or c.row[SOURCE_ID], **props}}

    def _import_command(self, group: list[_Create]) -> tuple[str, dict]:
        data = []
        for c in group:
            f = dict(c.fields)
            f.update(self._dates(c.row))
            data.append(f)
        p: dict[str, Any] = {"entityTypeId": self.type_id, "data": data}
        if any(k.upper().startswith("UF_CRM_") for c in group for k in c.fields):
            p["useOriginalUfNames"] = "Y"
        return "crm.item.batchImport", p

    # ------------------------------------------------------------------ write
    def write(self, creates: pa.Table, updates: pa.Table) -> WriteResult:
        self._ensure(writing=True)
        ids: dict[str, str] = {}
        rejects: list[dict] = []
        if creates.num_rows:
            self._write_creates(creates.to_pylist(), ids, rejects)
        if updates.num_rows:
            self._write_updates(updates.to_pylist(), ids, rejects)
        self.stats["rejected"] += len(rejects)
        return WriteResult(ids, make_rejects(rejects))

    def _plan_create(self, row: dict, rejects: list[dict]) -> _Create | None:
        try:
            fields = self._fields(row, None, True)
        except LookupError as e:
            rejects.append(_reject(row, "target_mapping", str(e)))
            return None
        dated = bool(self._dates(row))
        return _Create(row, fields, dated, self._row_hashes(row))

    def _write_creates(self, rows: list[dict], ids: dict[str, str], rejects: list[dict]) -> None:
        plans = [p for p in (self._plan_create(r, rejects) for r in rows) if p is not None]
        if self.api == "legacy" and self.opts.historical_dates:
            # IMPORT dates must not go back in time: send the batch oldest first
            plans.sort(key=lambda p: (p.row.get("created_at") is None, p.row.get("created_at") or datetime.min))
        todo = plans
        for round_ in range(RECONCILE_ROUNDS + 1):
            unknown = self._send_creates(todo, ids, rejects)
            if not unknown:
                break
            self.stats["reconciled"] += len(unknown)
            found = self._lookup([p.row[SOURCE_ID] for p in unknown])
            for p in unknown:
                sid = p.row[SOURCE_ID]
                if sid in found:
                    ids[sid] = found[sid]
            todo = [p for p in unknown if p.row[SOURCE_ID] not in found]
            if not todo:
                break
            if round_ == RECONCILE_ROUNDS:
                raise TransientError(f"{self.stream.pipeline}: {len(todo)} creates got no answer "
                                     f"{RECONCILE_ROUNDS + 1} times (e.g. {todo[0].row[SOURCE_ID]!r}); the next "
                                     "run looks them up before creating them")
        done = [(p.row[SOURCE_ID], ids[p.row[SOURCE_ID]], p.hashes) for p in plans if p.row[SOURCE_ID] in ids]
        self.hashes.put(done)
        self.stats["created"] += len(done)

    def _send_creates(self, plans: list[_Create], ids: dict[str, str], rejects: list[dict]) -> list[_Create]:
        """Send creates; fill ids and rejects; return the plans whose outcome is unknown."""
        units: list[tuple[tuple[str, dict], list[_Create]]] = []
        if self.api == "item" and self.opts.historical_dates:
            dated = [p for p in plans if p.dated]
            plain = [p for p in plans if not p.dated]
            dated.sort(key=lambda p: p.row.get("created_at"))
            for i in range(0, len(dated), 20):
                g = dated[i:i + 20]
                units.append((self._import_command(g), g))
            units += [(self._add_command(p), [p]) for p in plain]
        else:
            units = [(self._add_command(p), [p]) for p in plans]
        batches = [units[i:i + BATCH_MAX] for i in range(0, len(units), BATCH_MAX)]
        answers = self.client.batch_many([{f"c{j}": u[0] for j, u in enumerate(b)} for b in batches])
        unknown: list[_Create] = []
        retry_plain: list[_Create] = []
        for b, ans in zip(batches, answers):
            pending: set[str] = set()
            if isinstance(ans, BatchOutcomeUnknown):
                pending = set(ans.pending)
                ans_ok = ans.partial
            elif isinstance(ans, Bitrix24Error):
                raise ans
            else:
                ans_ok = ans
            for j, (cmd, group) in enumerate(b):
                key = f"c{j}"
                if key in pending:
                    unknown.extend(group)
                    continue
                if key in ans_ok.errors:
                    err = ans_ok.errors[key]
                    for p in group:
                        if p.dated and _DATE_ERROR.search(f"{err.code} {err.description}"):
                            p.dated = False
                            self.stats["dates_dropped"] += 1
                            retry_plain.append(p)
                        else:
                            rejects.append(_reject(p.row, "target_refused", _error_text(err)))
                    continue
                res = ans_ok.results.get(key)
                if cmd[0] == "crm.item.batchImport":
                    items = (res or {}).get("items") if isinstance(res, dict) else None
                    items = list(as_map(items).values()) if isinstance(items, dict) else (items or [])
                    for k, p in enumerate(group):
                        r = items[k] if k < len(items) else None
                        tid = _to_id(r) if isinstance(r, dict) and "error" not in r else None
                        if tid is not None:
                            ids[p.row[SOURCE_ID]] = tid
                        elif isinstance(r, dict) and "error" in r:
                            err = MethodError(str(r.get("error_description") or r.get("error")),
                                              code=str(r.get("error") or ""),
                                              description=str(r.get("error_description") or ""),
                                              method="crm.item.batchImport")
                            if _DATE_ERROR.search(f"{err.code} {err.description}"):
                                p.dated = False
                                self.stats["dates_dropped"] += 1
                                retry_plain.append(p)
                            else:
                                rejects.append(_reject(p.row, "target_refused", _error_text(err)))
                        else:
                            unknown.append(p)  # no per-row answer: look it up
                    continue
                tid = _to_id(res)
                p = group[0]
                if tid is None:
                    unknown.append(p)
                else:
                    ids[p.row[SOURCE_ID]] = tid
        if retry_plain:
            unknown += self._send_creates(retry_plain, ids, rejects)
        return unknown

    # ------------------------------------------------------------------ updates
    def _write_updates(self, rows: list[dict], ids: dict[str, str], rejects: list[dict]) -> None:
        old = self.hashes.get([r[SOURCE_ID] for r in rows])
        plans: list[_Update] = []
        for r in rows:
            sid = r[SOURCE_ID]
            new = self._row_hashes(r)
            prev = old.get(sid)
            changed = None if prev is None or self.api == "list" else {f for f, h in new.items() if prev.get(f) != h}
            plans.append(_Update(r, str(r[TARGET_ID]), new, changed))
        todo = plans
        for round_ in range(RECONCILE_ROUNDS + 1):
            todo = self._send_updates(todo, ids, rejects)
            if not todo:
                break
            self.stats["reconciled"] += len(todo)
            if round_ == RECONCILE_ROUNDS:
                raise TransientError(f"{self.stream.pipeline}: {len(todo)} updates got no answer "
                                     f"{RECONCILE_ROUNDS + 1} times (e.g. {todo[0].row[SOURCE_ID]!r})")
        done = [(p.row[SOURCE_ID], p.tid, p.hashes) for p in plans if p.row[SOURCE_ID] in ids]
        self.hashes.put(done)
        self.stats["updated"] += len(done)

    def _read_multi(self, tids: list[str]) -> dict[str, dict[str, list[dict]]]:
        """Existing PHONE/EMAIL/WEB entries ({ID, VALUE, VALUE_TYPE}) of legacy records, by target id."""
        if not tids or not self.multi:
            return {}
        prefix = LEGACY[self.ename]
        sel = ["ID", *self.multi.values()]
        cmds = [(f"{prefix}.list", {"filter": {"@ID": tids[i:i + LOOKUP_CHUNK]}, "select": sel,
                                    "order": {"ID": "ASC"}, "start": -1})
                for i in range(0, len(tids), LOOKUP_CHUNK)]
        out: dict[str, dict[str, list[dict]]] = {}
        for rows in self._run_reads(cmds):
            for r in rows:
                out[str(r.get("ID"))] = {m: [e for e in (r.get(m) or []) if isinstance(e, dict)]
                                         for m in self.multi.values()}
        return out

    def _multi_changes(self, existing: list[dict], new: list[str], vtype: str) -> list[dict]:
        out, kept = [], set()
        wanted = {v.strip().lower() for v in new}
        for e in existing:
            val = str(e.get("VALUE") or "").strip().lower()
            if val in wanted and val not in kept:
                kept.add(val)
            elif e.get("ID") is not None:
                out.append({"ID": e["ID"], "DELETE": "Y"})
        for v in new:
            if v.strip().lower() not in kept:
                kept.add(v.strip().lower())
                out.append({"VALUE": v, "VALUE_TYPE": vtype})
        return out

    def _update_commands(self, p: _Update, existing: dict[str, list[dict]] | None) -> list[tuple[str, dict]]:
        row, tid = p.row, p.tid
        only = p.changed
        fields = self._fields(row, only, False)
        cmds: list[tuple[str, dict]] = []
        if self.api == "legacy":
            prefix = LEGACY[self.ename]
            for f, name in self.multi.items():
                if only is None or f in only:
                    ch = self._multi_changes((existing or {}).get(name, []), split_multi(row.get(f)),
                                             getattr(self.opts, f"{f}_type"))
                    if ch:
                        fields[name] = ch
            if self.ename == "deal" and only is not None and "direction" in only \
                    and "direction" not in self.opts.fields:
                stage = fields.pop("STAGE_ID", None)
                cat = self._category_of(row)
                cmds.append(("crm.item.update", {"entityTypeId": 2, "id": int(tid),
                                                 "fields": {"categoryId": cat, **({"stageId": stage} if stage else {})}}))
            if fields:
                cmds.insert(0, (f"{prefix}.update", {"id": int(tid), "fields": fields,
                                                     "params": {"REGISTER_SONET_EVENT": "N"}}))
            if self.ename == "contact" and "company_id" in self.links and (only is None or "company_id" in only):
                cid = row.get("company_id")
                cmds.append(("crm.contact.company.items.set",
                             {"id": int(tid), "items": [{"COMPANY_ID": int(cid), "IS_PRIMARY": "Y"}] if cid else []}))
            if self.ename == "deal" and "contact_id" in self.links and (only is None or "contact_id" in only):
                cid = row.get("contact_id")
                cmds.append(("crm.deal.contact.items.set",
                             {"id": int(tid), "items": [{"CONTACT_ID": int(cid), "IS_PRIMARY": "Y"}] if cid else []}))
        elif self.api == "item":
            if fields:
                params: dict[str, Any] = {"entityTypeId": self.type_id, "id": int(tid), "fields": fields}
                if any(k.upper().startswith("UF_CRM_") for k in fields):
                    params["useOriginalUfNames"] = "Y"
                cmds.append(("crm.item.update", params))
        else:
            full = self._fields(row, None, True)  # an update overwrites the whole element: send everything
            props = {k: v for k, v in full.items() if k != "NAME"}
            cmds.append(("lists.element.update", {**self._list_base(), "ELEMENT_ID": int(tid),
                                                  "FIELDS": {"NAME": full.get("NAME") or row[SOURCE_ID], **props}}))
        return cmds

    def _send_updates(self, plans: list[_Update], ids: dict[str, str], rejects: list[dict]) -> list[_Update]:
        need = [p.tid for p in plans if self.multi and (p.changed is None or set(self.multi) & p.changed)]
        existing = self._read_multi(need) if need else {}
        work: list[_Update] = []
        for p in plans:
            try:
                p.commands = self._update_commands(p, existing.get(p.tid))
            except LookupError as e:
                rejects.append(_reject(p.row, "target_mapping", str(e)))
                continue
            if not p.commands:
                ids[p.row[SOURCE_ID]] = p.tid
                self.stats["skipped_updates"] += 1
                continue
            work.append(p)
        # direct calls for what a query string cannot say (an empty binding set)
        batched: list[tuple[_Update, int, tuple[str, dict]]] = []
        for p in work:
            for n, cmd in enumerate(p.commands):
                batched.append((p, n, cmd))
        failed: dict[int, Bitrix24Error] = {}
        unknown: set[int] = set()
        direct = [b for b in batched if b[2][0].endswith(".items.set") and not b[2][1].get("items")]
        batched = [b for b in batched if not (b[2][0].endswith(".items.set") and not b[2][1].get("items"))]
        for p, n, cmd in direct:
            try:
                self.client.call(*cmd)
            except OutcomeUnknown:
                unknown.add(id(p))
            except MethodError as e:
                failed.setdefault(id(p), e)
        chunks = [batched[i:i + BATCH_MAX] for i in range(0, len(batched), BATCH_MAX)]
        answers = self.client.batch_many([{f"u{j}": b[2] for j, b in enumerate(ch)} for ch in chunks])
        for ch, ans in zip(chunks, answers):
            if isinstance(ans, BatchOutcomeUnknown):
                pending, ok = set(ans.pending), ans.partial
            elif isinstance(ans, Bitrix24Error):
                raise ans
            else:
                pending, ok = set(), ans
            for j, (p, n, cmd) in enumerate(ch):
                key = f"u{j}"
                if key in pending:
                    unknown.add(id(p))
                elif key in ok.errors:
                    failed.setdefault(id(p), ok.errors[key])
        again = []
        for p in work:
            if id(p) in failed:
                rejects.append(_reject(p.row, "target_refused", _error_text(failed[id(p)])))
            elif id(p) in unknown:
                again.append(p)  # updates are redone from the portal's current state: multi-fields re-read
            else:
                ids[p.row[SOURCE_ID]] = p.tid
        return again

    # ------------------------------------------------------------------ duplicates already in the portal
    def find_matches(self, field: str, values: list[str], fields: list[str] = ()) -> dict[str, list[dict]]:
        """crm.duplicate.findbycomm for contacts and companies. Twenty values go in one command; a command with
        hits (rare in a migration) is asked again value by value, because the answer lists ids for all its values
        together. The entities found are read for ``fields`` (those the sink maps)."""
        if field not in ("phone", "email") or self.ename not in ("contact", "company") or self.api != "legacy":
            return {}
        self._ensure(writing=False)
        etype, ctype = self.ename.upper(), field.upper()
        values = list(dict.fromkeys(v for v in values if v and v.strip()))

        def ask(chunks: list[list[str]]) -> list[tuple[list[str], list[int]]]:
            cmds = [("crm.duplicate.findbycomm", {"entity_type": etype, "type": ctype, "values": ch}) for ch in chunks]
            return [(params["values"], [int(x) for x in (res.get(etype) or [])] if isinstance(res, dict) else [])
                    for (_, params), res in self._batched_reads(cmds)]

        found: dict[str, list[int]] = {}
        again: list[list[str]] = []
        for vals, ids in ask([values[i:i + 20] for i in range(0, len(values), 20)]):
            if ids and len(vals) == 1:
                found[vals[0]] = sorted(ids)
            elif ids:
                again.extend([v] for v in vals)
        if again:
            for vals, ids in ask(again):
                if ids:
                    found[vals[0]] = sorted(ids)
        self.stats["duplicates_found"] += len(found)
        want = {f: self.fmap[f] for f in fields if f in self.fmap}
        known: dict[str, dict] = {}
        tids = sorted({str(i) for ids in found.values() for i in ids}, key=int)
        if want and tids:
            prefix = LEGACY[self.ename]
            cmds = [(f"{prefix}.list", {"filter": {"@ID": tids[i:i + LOOKUP_CHUNK]}, "select": ["ID", *want.values()],
                                        "order": {"ID": "ASC"}, "start": -1})
                    for i in range(0, len(tids), LOOKUP_CHUNK)]
            for rows in self._run_reads(cmds):
                for r in rows:
                    known[str(r.get("ID"))] = {c: r.get(b) for c, b in want.items()}
        return {v: [{"id": str(i), **known.get(str(i), {})} for i in ids] for v, ids in found.items()}

    # ------------------------------------------------------------------ lookup
    def lookup(self, source_ids: list[str]) -> dict[str, str]:
        self._ensure(writing=False)
        found = self._lookup(list(source_ids))
        self.stats["adopted"] += len(found)
        return found

    def _lookup_command(self, chunk: list[str]) -> tuple[str, dict]:
        origin = self.stream.origin
        if self.api == "legacy":
            return f"{LEGACY[self.ename]}.list", {"filter": {"ORIGINATOR_ID": origin, "@ORIGIN_ID": chunk},
                                                  "select": ["ID", "ORIGIN_ID"], "order": {"ID": "ASC"},
                                                  "start": -1}
        if self.api == "item":
            return "crm.item.list", {"entityTypeId": self.type_id,
                                     "filter": {"originatorId": origin, "@originId": chunk},
                                     "select": ["id", "originId"], "order": {"id": "ASC"}, "start": -1}
        return "lists.element.get", {**self._list_base(), "FILTER": {"=CODE": chunk},
                                     "SELECT": ["ID", "CODE"], "ELEMENT_ORDER": {"ID": "ASC"}}

    def _key_of(self, row: dict) -> tuple[str | None, str | None]:
        if self.api == "legacy":
            return row.get("ORIGIN_ID"), _to_id(row.get("ID"))
        if self.api == "item":
            return row.get("originId"), _to_id(row.get("id"))
        return row.get("CODE"), _to_id(row.get("ID"))

    def _lookup(self, sids: list[str]) -> dict[str, str]:
        if not sids or self._missing_target:
            return {}
        cmds = [self._lookup_command(sids[i:i + LOOKUP_CHUNK]) for i in range(0, len(sids), LOOKUP_CHUNK)]
        out: dict[str, str] = {}
        wanted = set(sids)
        dups = 0
        for rows in self._run_reads(cmds, page_full=True):
            for r in rows:
                sid, tid = self._key_of(r)
                if sid is None or tid is None or str(sid) not in wanted:
                    continue
                sid = str(sid)
                if sid in out and out[sid] != tid:
                    dups += 1
                    if int(tid) < int(out[sid]):
                        out[sid] = tid
                    continue
                out[sid] = tid
        if dups:
            log.warning(f"{self.stream.pipeline}: {dups} keys are held by more than one Bitrix24 record "
                        "(the oldest is used)")
        return out

    def _batched_reads(self, cmds: list[tuple[str, dict]]) -> Iterator[tuple[tuple[str, dict], Any]]:
        """Run read commands 50 to a batch (several batches in flight); yields (command, its result), in order.
        A failed command raises its error."""
        chunks = [cmds[i:i + BATCH_MAX] for i in range(0, len(cmds), BATCH_MAX)]
        answers = self.client.batch_many([{f"l{j}": c for j, c in enumerate(ch)} for ch in chunks], write=False)
        for ch, ans in zip(chunks, answers):
            if isinstance(ans, Bitrix24Error):
                raise ans
            for j, cmd in enumerate(ch):
                key = f"l{j}"
                if key in ans.errors:
                    raise ans.errors[key]
                yield cmd, ans.results.get(key)

    def _run_reads(self, cmds: list[tuple[str, dict]], page_full: bool = True) -> Iterable[list[dict]]:
        """Run list commands 50 to a batch; yields each command's rows (all pages)."""
        for cmd, result in self._batched_reads(cmds):
            rows = _rows(result)
            yield rows
            if page_full and len(rows) >= PAGE:
                # more rows than one page: the rest by keyset paging
                method, params = cmd
                if method == "lists.element.get":
                    yield list(self.client.list_pages(method, params))
                else:
                    yield list(self.client.list_all(method, params))

    # ------------------------------------------------------------------ validate (reads only)
    def check(self) -> list[str]:
        """Problems `etl validate` reports for this pipeline's target: reads only, never writes."""
        problems = []
        try:
            self._ensure(writing=False)
            if self.api == "legacy":
                have = set(as_map(self.client.call(f"{LEGACY[self.ename]}.fields").result))
                missing = [t for t in self.fmap.values() if t not in have and not t.upper().startswith("UF_CRM_")]
                if missing:
                    problems.append(f"fields {', '.join(missing)} are not fields of {self.ename} in the portal")
                ufs = [t for t in self.fmap.values() if t.upper().startswith("UF_CRM_") and t not in have]
                if ufs and not self.opts.create_user_fields:
                    problems.append(f"user fields {', '.join(ufs)} do not exist (create_user_fields is off)")
            elif self._missing_target:
                what = self.opts.smart_process if self.api == "item" else self.opts.list
                create = getattr(what, "create", True)
                if not create:
                    problems.append(f"{self.api.replace('item', 'smart process')} {what} does not exist and "
                                    "create is off")
        except Bitrix24Error as e:
            problems.append(str(e))
        return problems


def _rows(result: Any) -> list[dict]:
    if isinstance(result, dict) and "items" in result:
        result = result["items"]
    if isinstance(result, dict):
        result = list(result.values())
    return [r for r in (result or []) if isinstance(r, dict)]


__all__ = ["Bitrix24Sink", "FieldHashes", "split_multi"]
