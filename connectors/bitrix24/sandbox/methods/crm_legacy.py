"""crm.contact.*, crm.company.*, crm.deal.* (legacy, deprecated but working): add, update, get, list, delete,
fields, userfield.add/list; answers with strings for scalars (reference 5.1, 1.3)."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from ..crm import PAGE
from ..envelope import ApiError, Result
from ..params import as_list, as_map, get, to_bool, to_int
from ..schema import LEGACY_BY_NAME, UF_TYPES, EntityDef, Field
from ..values import FieldError
from . import Call, method

ENTITY_TITLES = {"contact": "Contact", "company": "Company", "deal": "Deal"}


def legacy_error(e: FieldError) -> ApiError:
    return ApiError("ERROR_CORE", str(e), 400)


def need_id(p: dict) -> int:
    n = to_int(get(p, "id", "ID"))
    if n is None or n <= 0:
        raise ApiError("", "ID is not defined or invalid.", 400)
    return n


def need_fields(p: dict) -> dict:
    fields = as_map(get(p, "fields", "FIELDS"))
    if fields is None:
        raise ApiError("", "Parameter 'fields' must be array.", 400)
    return fields


def list_result(rows: list, total: int | None, start: int) -> Result:
    if total is None:
        return Result(rows, total=0)
    nxt = start + PAGE if start + len(rows) < total and len(rows) == PAGE else None
    return Result(rows, total=total, next=nxt)


def start_of(p: dict) -> int:
    s = to_int(get(p, "start", "START"))
    if s is None:
        return 0
    return -1 if s < 0 else s


def field_info(f: Field, camel: bool = False) -> dict:
    info = {"type": f.uf["user_type_id"] if f.uf else f.type, "isRequired": f.req, "isReadOnly": f.ro,
            "isImmutable": f.imm, "isMultiple": f.mult, "isDynamic": f.uf is not None, "title": f.title}
    if f.status_type:
        info["statusType"] = f.status_type
    if f.uf:
        labels = f.uf.get("labels") or {}
        info["listLabel"] = labels.get("LIST_COLUMN_LABEL") or f.title
        info["formLabel"] = labels.get("EDIT_FORM_LABEL") or f.title
        info["filterLabel"] = labels.get("LIST_FILTER_LABEL") or f.title
        info["settings"] = f.uf.get("settings") or {}
        if f.uf.get("items") is not None:
            info["items"] = f.uf["items"]
    if camel:
        info["upperName"] = f.upper
    return info


def _entity(call: Call, name: str) -> EntityDef:
    return call.store.entity(LEGACY_BY_NAME[name])


def _register(name: str) -> None:
    title = ENTITY_TITLES[name]

    @method(f"crm.{name}.add")
    def add(call: Call, p: dict):
        d = _entity(call, name)
        fields = need_fields(p)
        params = as_map(get(p, "params", "PARAMS")) or {}
        try:
            return call.crm.add(call.ctx, d, fields, import_mode=to_bool(get(params, "IMPORT")))
        except FieldError as e:
            raise legacy_error(e) from None

    @method(f"crm.{name}.update")
    def update(call: Call, p: dict):
        d = _entity(call, name)
        id_ = need_id(p)
        fields = need_fields(p)
        try:
            call.crm.update(call.ctx, d, id_, fields)
        except KeyError:
            raise ApiError("", f"{title} is not found.", 400) from None
        except FieldError as e:
            raise legacy_error(e) from None
        return True

    @method(f"crm.{name}.get")
    def get_(call: Call, p: dict):
        d = _entity(call, name)
        id_ = need_id(p)
        row = call.crm.row(call.ctx.conn, d, id_)
        if row is None:
            raise ApiError("", "Not found", 400)
        return call.crm.render_legacy(call.ctx, d, [row], get_mode=True)[0]

    @method(f"crm.{name}.list")
    def list_(call: Call, p: dict):
        d = _entity(call, name)
        start = start_of(p)
        rows, total = call.crm.list(call.ctx, d, flt=get(p, "filter"), order=get(p, "order"), start=start,
                                    item_style=False)
        select = [str(s) for s in as_list(get(p, "select"))] or None
        return list_result(call.crm.render_legacy(call.ctx, d, rows, select=select), total, start)

    @method(f"crm.{name}.delete")
    def delete(call: Call, p: dict):
        d = _entity(call, name)
        id_ = need_id(p)
        if not call.crm.delete(call.ctx, d, id_):
            raise ApiError("ERROR_CORE", "Element not found", 400)
        return True

    @method(f"crm.{name}.fields")
    def fields_(call: Call, p: dict):
        d = _entity(call, name)
        return {f.upper: field_info(f) for f in d.fields.values()}

    @method(f"crm.{name}.userfield.add")
    def uf_add(call: Call, p: dict):
        d = _entity(call, name)
        return add_userfield(call, d, need_fields(p))

    @method(f"crm.{name}.userfield.list")
    def uf_list(call: Call, p: dict):
        d = _entity(call, name)
        t = call.store.t["uf"]
        rows = call.ctx.conn.execute(sa.select(t).where(t.c.ENTITY_ID == d.uf_entity_id).order_by(t.c.SORT, t.c.ID))
        out = []
        for r in rows:
            out.append({"ID": str(r.ID), "ENTITY_ID": r.ENTITY_ID, "FIELD_NAME": r.FIELD_NAME,
                        "USER_TYPE_ID": r.USER_TYPE_ID, "XML_ID": r.XML_ID, "SORT": str(r.SORT),
                        "MULTIPLE": r.MULTIPLE, "MANDATORY": r.MANDATORY, "SHOW_FILTER": r.SHOW_FILTER,
                        "SHOW_IN_LIST": r.SHOW_IN_LIST, "EDIT_IN_LIST": r.EDIT_IN_LIST,
                        "IS_SEARCHABLE": r.IS_SEARCHABLE, "SETTINGS": json.loads(r.SETTINGS or "{}")})
        return Result(out, total=len(out))


for _name in ENTITY_TITLES:
    _register(_name)


_UF_NAME = re.compile(r"^[A-Z0-9_]+$")


def add_userfield(call: Call, d: EntityDef, fields: dict) -> int:
    """crm.<entity>.userfield.add: FIELD_NAME gets UF_CRM_ (UF_X -> UF_CRM_X), at most 50 characters of A-Z0-9_
    (lower case is upper-cased); the table gets its column when the command commits."""
    raw = str(get(fields, "FIELD_NAME") or "").strip()
    if not raw:
        raise ApiError("ERROR_CORE", "The field name (FIELD_NAME) is not specified.", 400)
    name = raw.upper()
    if name.startswith("UF_CRM_"):
        pass
    elif name.startswith("UF_"):
        name = "UF_CRM_" + name[3:]
    else:
        name = "UF_CRM_" + name
    if not _UF_NAME.match(name) or len(name) > 50:
        raise ApiError("ERROR_CORE", f'Invalid field name "{raw}": A-Z, 0-9 and _ only, at most 50 characters.', 400)
    utype = str(get(fields, "USER_TYPE_ID") or "string").strip()
    if utype not in UF_TYPES and not re.fullmatch(r"[a-z0-9_]+", utype):
        raise ApiError("ERROR_CORE", f'Unknown user field type "{utype}".', 400)
    t = call.store.t["uf"]
    conn = call.ctx.conn
    if conn.execute(sa.select(t.c.ID).where(t.c.ENTITY_ID == d.uf_entity_id, t.c.FIELD_NAME == name)).first():
        raise ApiError("ERROR_CORE", f'A field with the code "{name}" already exists.', 400)
    labels = {}
    label = get(fields, "LABEL")
    for key in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE"):
        v = get(fields, key, default=label)
        if isinstance(v, dict):
            v = v.get("ru") or v.get("en") or next(iter(v.values()), None)
        if v is not None:
            labels[key] = str(v)
    settings = as_map(get(fields, "SETTINGS")) or {}
    res = conn.execute(sa.insert(t).values(
        ENTITY_ID=d.uf_entity_id, FIELD_NAME=name, USER_TYPE_ID=utype, XML_ID=get(fields, "XML_ID"),
        SORT=to_int(get(fields, "SORT")) or 100, MULTIPLE="Y" if to_bool(get(fields, "MULTIPLE")) else "N",
        MANDATORY="Y" if to_bool(get(fields, "MANDATORY")) else "N",
        SHOW_FILTER=str(get(fields, "SHOW_FILTER") or "N")[:1], SHOW_IN_LIST=str(get(fields, "SHOW_IN_LIST") or "Y")[:1],
        EDIT_IN_LIST=str(get(fields, "EDIT_IN_LIST") or "Y")[:1],
        IS_SEARCHABLE=str(get(fields, "IS_SEARCHABLE") or "N")[:1],
        SETTINGS=json.dumps(settings, ensure_ascii=False), LABELS=json.dumps(labels, ensure_ascii=False)))
    uf_id = int(res.inserted_primary_key[0])
    if utype == "enumeration":
        e = call.store.t["uf_enum"]
        for n, item in enumerate(as_list(get(fields, "LIST"))):
            item = as_map(item) or {"VALUE": item}
            conn.execute(sa.insert(e).values(FIELD_ID=uf_id, VALUE=str(item.get("VALUE", "")),
                                             DEF="Y" if to_bool(item.get("DEF")) else "N",
                                             SORT=to_int(item.get("SORT")) or (n + 1) * 10,
                                             XML_ID=item.get("XML_ID")))
    call.after_commit.append(call.store.reload)
    return uf_id
