"""crm.item.* (smart processes, and deals/contacts/companies through the universal API) and crm.type.*:
camelCase names, native types, ``{"item": ..}`` / ``{"items": [..]}`` wrappers (reference 5.7, 1.3)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from ..crm import PAGE, Ctx
from ..envelope import ApiError, Result, iso
from ..filters import column_clause, compile_filter, order_pairs
from ..params import as_list, as_map, get, to_bool, to_int
from ..schema import TYPE_NAMES, EntityDef, camel_to_snake
from ..seed import ITEM_STAGES, stage_rows
from ..storage import TYPE_FLAGS, type_dict
from ..values import FieldError
from . import Call, method
from .crm_legacy import field_info


def item_error(e: FieldError) -> ApiError:
    code = e.code if e.code.startswith("CRM_") else "CRM_FIELD_ERROR_VALUE_NOT_VALID"
    return ApiError(code, str(e), 400)


def entity_of(call: Call, p: dict) -> EntityDef:
    raw = get(p, "entityTypeId")
    etid = to_int(raw)
    if raw is None or raw == "":
        raise ApiError("100", "Could not find value for parameter {entityTypeId}", 400)
    d = call.store.entity(etid) if etid is not None else None
    if d is None:
        if etid in TYPE_NAMES:
            raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type `{TYPE_NAMES[etid]}` is not supported", 400)
        raise ApiError("NOT_FOUND", "Smart process not found", 400)
    return d


def need_item_id(p: dict) -> int:
    raw = get(p, "id")
    n = to_int(raw)
    if raw is None or raw == "":
        raise ApiError("100", "Could not find value for parameter {id}", 400)
    if n is None or n <= 0:
        raise ApiError("NOT_FOUND", "Element not found", 400)
    return n


def item_fields(p: dict) -> dict:
    f = as_map(get(p, "fields"))
    if f is None:
        raise ApiError("100", "Could not find value for parameter {fields}", 400)
    return f


def to_upper(call: Call, d: EntityDef, fields: dict, existing_fm: list[dict] | None = None) -> dict:
    """crm.item field names (camelCase, UPPER tolerated) -> the engine's UPPER names; ``fm`` -> multi-fields."""
    out = {}
    for k, v in fields.items():
        k = str(k)
        if k == "fm":
            if d.has_fm:
                out.update(fm_to_legacy(v, existing_fm))
            continue
        f = d.resolve(k)
        if f is not None:
            out[f.upper] = v
    return out


def fm_to_legacy(fm, existing: list[dict] | None) -> dict:
    """``fm``: on add a list ``[{typeId, valueType, value}]``; on update an object keyed ``n0``.. (new) or by entry
    id (an empty value deletes). An element without typeId is skipped (an existing id knows its type)."""
    by_id = {e["ID"]: e for e in (existing or [])}
    out: dict[str, list] = {}
    items = fm.items() if isinstance(fm, dict) else ((None, e) for e in as_list(fm))
    for key, entry in items:
        e = as_map(entry) or {}
        eid = to_int(e.get("id")) if key is None or str(key).startswith("n") else to_int(key)
        if existing is None:
            eid = None
        type_id = e.get("typeId")
        if eid is not None and eid in by_id:
            type_id = by_id[eid]["TYPE_ID"]
            out.setdefault(type_id, []).append({"ID": eid, "VALUE": e.get("value", ""),
                                                "VALUE_TYPE": e.get("valueType")})
            continue
        if not type_id:
            continue
        out.setdefault(str(type_id).upper(), []).append({"VALUE": e.get("value", ""), "VALUE_TYPE": e.get("valueType")})
    return out


def original(p: dict) -> bool:
    return to_bool(get(p, "useOriginalUfNames"))


def render_one(call: Call, d: EntityDef, id_: int, p: dict) -> dict:
    row = call.crm.row(call.ctx.conn, d, id_)
    return call.crm.render_item(call.ctx, d, [row], original_uf=original(p))[0]


@method("crm.item.add")
def item_add(call: Call, p: dict):
    d = entity_of(call, p)
    fields = to_upper(call, d, item_fields(p))
    try:
        new_id = call.crm.add(call.ctx, d, fields)
    except FieldError as e:
        raise item_error(e) from None
    return {"item": render_one(call, d, new_id, p)}


@method("crm.item.update")
def item_update(call: Call, p: dict):
    d = entity_of(call, p)
    id_ = need_item_id(p)
    raw = item_fields(p)
    existing = call.crm.fm_of(call.ctx.conn, d.etid, [id_])[id_] if d.has_fm and "fm" in raw else None
    fields = to_upper(call, d, raw, existing)
    try:
        call.crm.update(call.ctx, d, id_, fields, allow_immutable=True)
    except KeyError:
        raise ApiError("NOT_FOUND", "Element not found", 400) from None
    except FieldError as e:
        raise item_error(e) from None
    return {"item": render_one(call, d, id_, p)}


@method("crm.item.get")
def item_get(call: Call, p: dict):
    d = entity_of(call, p)
    id_ = need_item_id(p)
    row = call.crm.row(call.ctx.conn, d, id_)
    if row is None:
        raise ApiError("NOT_FOUND", "Element not found", 400)
    return {"item": call.crm.render_item(call.ctx, d, [row], original_uf=original(p))[0]}


@method("crm.item.list")
def item_list(call: Call, p: dict):
    d = entity_of(call, p)
    start = to_int(get(p, "start")) or 0
    start = -1 if start < 0 else start

    def unknown(name):
        raise ApiError("INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter", 400)

    rows, total = call.crm.list(call.ctx, d, flt=get(p, "filter"), order=get(p, "order"), start=start,
                                item_style=True, on_unknown=unknown)
    select = [str(s) for s in as_list(get(p, "select"))] or None
    items = call.crm.render_item(call.ctx, d, rows, select=select, list_mode=True, original_uf=original(p))
    if total is None:
        return Result({"items": items}, total=0)
    nxt = start + PAGE if len(rows) == PAGE and start + PAGE < total else None
    return Result({"items": items}, total=total, next=nxt)


@method("crm.item.delete")
def item_delete(call: Call, p: dict):
    d = entity_of(call, p)
    id_ = need_item_id(p)
    if not call.crm.delete(call.ctx, d, id_):
        raise ApiError("NOT_FOUND", "Element not found", 400)
    return {}  # PHP's empty array: []


@method("crm.item.fields")
def item_fields_method(call: Call, p: dict):
    d = entity_of(call, p)
    out = {}
    orig = original(p)
    for f in d.fields.values():
        name = f.upper if (orig and f.uf) else f.camel
        out[name] = field_info(f, camel=True)
    if d.has_fm:
        out["fm"] = {"type": "crm_multifield", "isRequired": False, "isReadOnly": False, "isImmutable": False,
                     "isMultiple": True, "isDynamic": False, "title": "Multi-fields", "upperName": "FM"}
    return {"fields": out}


@method("crm.item.batchImport", "crm.item.import", tx=False)
def item_batch_import(call: Call, p: dict):
    """Rows with historical createdTime/updatedTime/createdBy..; each row its own transaction; per-row results."""
    single = "data" not in {k.lower() for k in p} and get(p, "fields") is not None
    if single:  # crm.item.import: one row in `fields`
        data = [get(p, "fields")]
    else:
        data = as_list(get(p, "data"))
    with call.store.tx() as conn:
        call.ctx = Ctx(call.store, conn, call.user_id)
        d = entity_of(call, p)
    if not single and len(data) > 20:
        raise ApiError("MAX_IMPORT_BATCH_SIZE_EXCEEDED", "Maximum import batch size (20) exceeded", 400)
    results = []
    for row in data:
        fields = as_map(row)
        try:
            if fields is None:
                raise ApiError("100", "Could not find value for parameter {fields}", 400)
            with call.store.tx() as conn:
                call.ctx = Ctx(call.store, conn, call.user_id)
                new_id = call.crm.add(call.ctx, d, to_upper(call, d, fields), import_mode=True, strict_import=True)
            results.append({"item": {"id": new_id}})
        except FieldError as e:
            err = item_error(e)
            results.append({"error": err.code, "error_description": err.description})
        except ApiError as e:
            results.append({"error": e.code, "error_description": e.description})
    if single:
        r = results[0]
        if "error" in r:
            raise ApiError(r["error"], r["error_description"], 400)
        return {"item": r["item"]}
    return {"items": results}


# ------------------------------------------------------------------ smart-process types
def _type_out(call: Call, t: dict) -> dict:
    rel = call.store.t["relation"]
    out = {"id": t["id"], "title": t["title"], "code": t["code"], "createdBy": t["createdBy"],
           "entityTypeId": t["entityTypeId"], "customSectionId": t["customSectionId"]}
    for f in TYPE_FLAGS:
        out[f] = t[f]
    out["createdTime"] = iso(t["createdTime"])
    out["updatedTime"] = iso(t["updatedTime"])
    out["updatedBy"] = t["updatedBy"]
    rows = call.ctx.conn.execute(sa.select(rel).where(sa.or_(rel.c.PARENT_TYPE == t["entityTypeId"],
                                                             rel.c.CHILD_TYPE == t["entityTypeId"])))
    parent, child = [], []
    for r in rows:
        item = {"isChildrenListEnabled": r.IS_CHILDREN_LIST_ENABLED, "isPredefined": r.IS_PREDEFINED}
        if r.CHILD_TYPE == t["entityTypeId"]:
            parent.append({"entityTypeId": r.PARENT_TYPE, **item})
        else:
            child.append({"entityTypeId": r.CHILD_TYPE, **item})
    out["relations"] = {"parent": parent, "child": child}
    out["linkedUserFields"] = t["linkedUserFields"] or {}
    out["customSections"] = []
    return out


def _flag(v) -> str:
    return "Y" if to_bool(v) else "N"


@method("crm.type.add")
def type_add(call: Call, p: dict):
    fields = as_map(get(p, "fields"))
    if fields is None:
        raise ApiError("100", "Could not find value for parameter {fields}", 400)
    title = str(fields.get("title") or "").strip()
    if not title:
        raise ApiError("CRM_FIELD_ERROR_REQUIRED", 'Field "Title" is required', 400)
    conn = call.ctx.conn
    T = call.store.t
    taken = {r[0] for r in conn.execute(sa.select(T["type"].c.ENTITY_TYPE_ID))}
    etid = to_int(fields.get("entityTypeId"))
    if etid is None or etid == 0:
        etid = 1030
        while etid in taken:
            etid += 2
    elif not ((128 <= etid <= 192) or (etid >= 1030 and etid % 2 == 0)):
        raise ApiError("INVALID_ARG_VALUE", "entityTypeId is out of allowed range", 400)
    elif etid in taken:
        raise ApiError("INVALID_ARG_VALUE", f"A smart process with entityTypeId {etid} already exists", 400)
    flags = {f: _flag(fields.get(f)) for f in TYPE_FLAGS}
    flags["isSetOpenPermissions"] = _flag(fields.get("isSetOpenPermissions", "Y"))
    linked = {k: _flag(v) for k, v in (as_map(fields.get("linkedUserFields")) or {}).items()}
    now = call.ctx.now
    res = conn.execute(sa.insert(T["type"]).values(
        ENTITY_TYPE_ID=etid, TITLE=title, CODE=fields.get("code"), FLAGS=json.dumps(flags),
        LINKED_UF=json.dumps(linked), CUSTOM_SECTION_ID=to_int(fields.get("customSectionId")),
        CREATED_BY=call.user_id, UPDATED_BY=call.user_id, CREATED_TIME=now, UPDATED_TIME=now))
    type_id = int(res.inserted_primary_key[0])
    rels = []
    if flags["isClientEnabled"] == "Y":
        rels += [(3, etid, "Y", "Y"), (4, etid, "Y", "Y")]
    relations = as_map(fields.get("relations")) or {}
    for r in as_list(relations.get("parent")):
        r = as_map(r) or {}
        pe = to_int(r.get("entityTypeId"))
        if pe and not any(x[0] == pe and x[1] == etid for x in rels):
            rels.append((pe, etid, _flag(r.get("isChildrenListEnabled")), "N"))
    for r in as_list(relations.get("child")):
        r = as_map(r) or {}
        ce = to_int(r.get("entityTypeId"))
        if ce:
            rels.append((etid, ce, _flag(r.get("isChildrenListEnabled")), "N"))
    for pe, ce, lst, pre in rels:
        conn.execute(sa.insert(T["relation"]).values(PARENT_TYPE=pe, CHILD_TYPE=ce, IS_CHILDREN_LIST_ENABLED=lst,
                                                     IS_PREDEFINED=pre))
    res = conn.execute(sa.insert(T["category"]).values(ENTITY_TYPE_ID=etid, NAME="General", SORT=500, IS_DEFAULT="Y",
                                                       IS_SYSTEM="N", CREATED_DATE=now))
    cat = int(res.inserted_primary_key[0])
    conn.execute(sa.insert(T["status"]), stage_rows(f"DYNAMIC_{etid}_STAGE_{cat}", f"DT{etid}_{cat}:", cat,
                                                    ITEM_STAGES))
    call.after_commit.append(call.store.reload)
    call.after_commit.append(call.crm.invalidate)
    row = conn.execute(sa.select(T["type"]).where(T["type"].c.ID == type_id)).first()
    return {"type": _type_out(call, type_dict(dict(row._mapping)))}


def _types(call: Call) -> list[dict]:
    t = call.store.t["type"]
    return [type_dict(dict(r._mapping)) for r in call.ctx.conn.execute(sa.select(t).order_by(t.c.ID))]


@method("crm.type.list")
def type_list(call: Call, p: dict):
    t = call.store.t["type"]
    cols = {"id": (t.c.ID, "int"), "entityTypeId": (t.c.ENTITY_TYPE_ID, "int"), "title": (t.c.TITLE, "str"),
            "code": (t.c.CODE, "str"), "createdBy": (t.c.CREATED_BY, "int"), "createdTime": (t.c.CREATED_TIME, "date"),
            "updatedTime": (t.c.UPDATED_TIME, "date"), "customSectionId": (t.c.CUSTOM_SECTION_ID, "int")}

    def resolve(name):
        if name in cols:
            col, kind = cols[name]
            return lambda op, v: column_clause(col, kind, op, v)
        return None

    def unknown(name):
        raise ApiError("INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter", 400)

    clauses = compile_filter(get(p, "filter"), resolve, groups=True, on_unknown=unknown)
    ordering = []
    for name, desc in order_pairs(get(p, "order")):
        if name not in cols:
            raise ApiError("100", f"Unknown field definition `{camel_to_snake(name)}`", 400)
        ordering.append(cols[name][0].desc() if desc else cols[name][0].asc())
    start = max(to_int(get(p, "start")) or 0, 0)
    q = sa.select(t).where(*clauses).order_by(*ordering, t.c.ID).offset(start).limit(PAGE)
    total = call.ctx.conn.execute(sa.select(sa.func.count()).select_from(t).where(*clauses)).scalar()
    types = [_type_out(call, type_dict(dict(r._mapping))) for r in call.ctx.conn.execute(q)]
    nxt = start + PAGE if start + PAGE < total else None
    return Result({"types": types}, total=total, next=nxt)


@method("crm.type.get")
def type_get(call: Call, p: dict):
    id_ = to_int(get(p, "id"))
    for t in _types(call):
        if t["id"] == id_:
            return {"type": _type_out(call, t)}
    raise ApiError("NOT_FOUND", "Smart process not found", 400)


@method("crm.type.getByEntityTypeId")
def type_get_by_etid(call: Call, p: dict):
    etid = to_int(get(p, "entityTypeId"))
    for t in _types(call):
        if t["entityTypeId"] == etid:
            return {"type": _type_out(call, t)}
    raise ApiError("NOT_FOUND", "Smart process not found", 400)

