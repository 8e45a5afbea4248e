"""Pipelines (crm.category.*), dictionaries and stages (crm.status.*, crm.dealcategory.stage.list), bindings
(crm.contact.company.items.*, crm.deal.contact.items.*) and crm.duplicate.findbycomm (reference 5.2, 5.6)."""

from __future__ import annotations

import sqlalchemy as sa

from ..crm import bound_type
from ..envelope import ApiError, Result
from ..filters import column_clause, compile_filter, order_pairs
from ..params import as_list, as_map, get, to_bool, to_int
from ..schema import COMPANY, CONTACT, DEAL, TYPE_NAMES
from ..seed import DEAL_STAGES, ITEM_STAGES, stage_rows
from ..values import norm_comm
from . import Call, method
from .crm_legacy import need_id

SEMANTICS = {None: "process", "S": "success", "F": "failure"}


# ------------------------------------------------------------------ pipelines
def _category_out(etid: int, c: dict) -> dict:
    out = {"id": c["ID"], "name": c["NAME"], "sort": c["SORT"], "entityTypeId": etid, "isDefault": c["IS_DEFAULT"]}
    if etid == DEAL:
        out["originId"] = c.get("ORIGIN_ID") or ""
        out["originatorId"] = c.get("ORIGINATOR_ID") or ""
    else:
        out["isSystem"] = c.get("IS_SYSTEM") or "N"
        out["code"] = c.get("CODE")
    return out


def _category_entity(call: Call, p: dict) -> int:
    etid = to_int(get(p, "entityTypeId"))
    if etid == DEAL or (etid is not None and etid in call.store.types):
        return etid
    if etid in TYPE_NAMES:
        raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type `{TYPE_NAMES[etid]}` is not supported", 400)
    raise ApiError("NOT_FOUND", "SPA not found", 400)


@method("crm.category.list")
def category_list(call: Call, p: dict):
    etid = _category_entity(call, p)
    cats = call.crm.categories(call.ctx.conn, etid)
    items = [_category_out(etid, c) for c in cats.values()]
    return Result({"categories": items}, total=len(items))


@method("crm.category.get")
def category_get(call: Call, p: dict):
    etid = _category_entity(call, p)
    c = call.crm.categories(call.ctx.conn, etid).get(to_int(get(p, "id")))
    if c is None:
        raise ApiError("NOT_FOUND", "Category not found", 400)
    return {"category": _category_out(etid, c)}


@method("crm.category.add")
def category_add(call: Call, p: dict):
    """A new pipeline with its stages: deals ``C<N>:NEW``.. in DEAL_STAGE_<N>, smart processes
    ``DT<etid>_<N>:NEW``.. in DYNAMIC_<etid>_STAGE_<N>."""
    etid = _category_entity(call, p)
    fields = as_map(get(p, "fields")) or {}
    name = str(fields.get("name") or fields.get("NAME") or "").strip()
    if not name:
        raise ApiError("0", "Field 'NAME' is required", 400)
    if len(name) > 255:
        raise ApiError("0", "Field 'NAME' is too long", 400)
    sort = to_int(fields.get("sort"))
    sort = 500 if sort is None else max(sort, 0)
    conn = call.ctx.conn
    t = call.store.t["category"]
    is_default = "N"
    if etid != DEAL and to_bool(fields.get("isDefault")):
        conn.execute(sa.update(t).where(t.c.ENTITY_TYPE_ID == etid).values(IS_DEFAULT="N"))
        is_default = "Y"
    res = conn.execute(sa.insert(t).values(
        ENTITY_TYPE_ID=etid, NAME=name, SORT=sort, IS_DEFAULT=is_default, IS_SYSTEM="N",
        ORIGIN_ID=fields.get("originId"), ORIGINATOR_ID=fields.get("originatorId"), CREATED_DATE=call.ctx.now))
    cid = int(res.inserted_primary_key[0])
    if etid == DEAL:
        rows = stage_rows(f"DEAL_STAGE_{cid}", f"C{cid}:", cid, DEAL_STAGES)
    else:
        rows = stage_rows(f"DYNAMIC_{etid}_STAGE_{cid}", f"DT{etid}_{cid}:", cid, ITEM_STAGES)
    conn.execute(sa.insert(call.store.t["status"]), rows)
    call.crm.invalidate()
    call.after_commit.append(call.crm.invalidate)
    c = call.crm.categories(conn, etid)[cid]
    return {"category": _category_out(etid, c)}


# ------------------------------------------------------------------ dictionaries and stages
def _status_out(r) -> dict:
    sem = r.SEMANTICS
    extra = {"SEMANTICS": SEMANTICS.get(sem, "process"), "COLOR": r.COLOR}
    if r.STATUS_ID.endswith("APOLOGY") and sem == "F":
        extra["SEMANTICS"] = "apology"
    return {"ID": str(r.ID), "ENTITY_ID": r.ENTITY_ID, "STATUS_ID": r.STATUS_ID, "NAME": r.NAME,
            "NAME_INIT": r.NAME_INIT or "", "SORT": str(r.SORT), "SYSTEM": r.SYSTEM,
            "CATEGORY_ID": None if r.CATEGORY_ID is None else str(r.CATEGORY_ID), "COLOR": r.COLOR,
            "SEMANTICS": sem, "EXTRA": extra}


@method("crm.status.list")
def status_list(call: Call, p: dict):
    t = call.store.t["status"]
    cols = {"ID": (t.c.ID, "int"), "ENTITY_ID": (t.c.ENTITY_ID, "str"), "STATUS_ID": (t.c.STATUS_ID, "str"),
            "NAME": (t.c.NAME, "str"), "SORT": (t.c.SORT, "int"), "SYSTEM": (t.c.SYSTEM, "char"),
            "CATEGORY_ID": (t.c.CATEGORY_ID, "int"), "SEMANTICS": (t.c.SEMANTICS, "str")}

    def resolve(name):
        if name.upper() in cols:
            col, kind = cols[name.upper()]
            return lambda op, v: column_clause(col, kind, op, v)
        return None

    clauses = compile_filter(get(p, "filter"), resolve)
    ordering = [(cols[n.upper()][0].desc() if desc else cols[n.upper()][0].asc())
                for n, desc in order_pairs(get(p, "order")) if n.upper() in cols]
    q = sa.select(t).where(*clauses).order_by(*ordering, t.c.SORT, t.c.ID)
    rows = [_status_out(r) for r in call.ctx.conn.execute(q)]
    return Result(rows, total=len(rows))


@method("crm.status.add")
def status_add(call: Call, p: dict):
    """A dictionary entry or a stage; a stage of deal pipeline N gets the prefix ``C<N>:`` (DECISION -> C1:DECISION)."""
    fields = as_map(get(p, "fields")) or {}
    entity_id = str(fields.get("ENTITY_ID") or "").strip()
    status_id = str(fields.get("STATUS_ID") or "").strip()
    name = str(fields.get("NAME") or "").strip()
    if not entity_id or not status_id or not name:
        raise ApiError("", "ENTITY_ID, STATUS_ID and NAME are required.", 400)
    category = None
    if entity_id.startswith("DEAL_STAGE_"):
        category = to_int(entity_id.rsplit("_", 1)[1])
        prefix = f"C{category}:"
        if not status_id.startswith(prefix):
            status_id = prefix + status_id
    elif entity_id.startswith("DYNAMIC_") and "_STAGE_" in entity_id:
        etid = entity_id.split("_")[1]
        category = to_int(entity_id.rsplit("_", 1)[1])
        prefix = f"DT{etid}_{category}:"
        if not status_id.startswith(prefix):
            status_id = prefix + status_id
    t = call.store.t["status"]
    conn = call.ctx.conn
    if conn.execute(sa.select(t.c.ID).where(t.c.ENTITY_ID == entity_id, t.c.STATUS_ID == status_id)).first():
        raise ApiError("", f'The status "{status_id}" already exists.', 400)
    sem = str(fields.get("SEMANTICS") or "").upper()[:1] or None
    res = conn.execute(sa.insert(t).values(ENTITY_ID=entity_id, STATUS_ID=status_id, NAME=name, NAME_INIT=name,
                                           SORT=to_int(fields.get("SORT")) or 500, SYSTEM="N", CATEGORY_ID=category,
                                           COLOR=fields.get("COLOR"), SEMANTICS=sem if sem in ("S", "F") else None))
    call.crm.invalidate()
    call.after_commit.append(call.crm.invalidate)
    return int(res.inserted_primary_key[0])


@method("crm.dealcategory.stage.list")
def dealcategory_stage_list(call: Call, p: dict):
    cid = to_int(get(p, "id")) or 0
    entity = "DEAL_STAGE" if cid == 0 else f"DEAL_STAGE_{cid}"
    t = call.store.t["status"]
    rows = call.ctx.conn.execute(sa.select(t).where(t.c.ENTITY_ID == entity).order_by(t.c.SORT, t.c.ID))
    return [{"NAME": r.NAME, "SORT": str(r.SORT), "STATUS_ID": r.STATUS_ID} for r in rows]


# ------------------------------------------------------------------ bindings
def _binding_methods(prefix: str, owner: int, bound_key: str) -> None:
    @method(f"{prefix}.items.set")
    def items_set(call: Call, p: dict):
        id_ = need_id(p)
        d = call.store.entity(owner)
        if call.crm.row(call.ctx.conn, d, id_) is None:
            raise ApiError("", "Not found", 400)
        raw = get(p, "items")
        if raw is None:
            raise ApiError("", "The parameter 'items' must be array.", 400)
        items = []
        for it in as_list(raw):
            m = as_map(it) or {}
            bid = to_int(m.get(bound_key))
            if bid is None or bid <= 0:
                raise ApiError("", f"The parameter '{bound_key}' is not defined or invalid.", 400)
            items.append({"ID": bid, "SORT": m.get("SORT"), "IS_PRIMARY": m.get("IS_PRIMARY")})
        call.crm.set_bindings(call.ctx, owner, id_, items)
        return True

    @method(f"{prefix}.items.get")
    def items_get(call: Call, p: dict):
        id_ = need_id(p)
        d = call.store.entity(owner)
        if call.crm.row(call.ctx.conn, d, id_) is None:
            raise ApiError("", "Not found", 400)
        rows = call.crm.bindings_of(call.ctx.conn, owner, [id_])[id_]
        return [{bound_key: b["ID"], "SORT": b["SORT"], "ROLE_ID": b["ROLE_ID"], "IS_PRIMARY": b["IS_PRIMARY"]}
                for b in rows]

    @method(f"{prefix}.items.delete")
    def items_delete(call: Call, p: dict):
        id_ = need_id(p)
        d = call.store.entity(owner)
        if call.crm.row(call.ctx.conn, d, id_) is None:
            raise ApiError("", "Not found", 400)
        call.crm.set_bindings(call.ctx, owner, id_, [])
        return True


_binding_methods("crm.contact.company", CONTACT, "COMPANY_ID")
_binding_methods("crm.deal.contact", DEAL, "CONTACT_ID")


@method("crm.company.contact.items.get")
def company_contact_items_get(call: Call, p: dict):
    """The reverse view: contacts bound to a company."""
    id_ = need_id(p)
    if call.crm.row(call.ctx.conn, call.store.entity(COMPANY), id_) is None:
        raise ApiError("", "Not found", 400)
    b = call.store.t["binding"]
    rows = call.ctx.conn.execute(sa.select(b).where(b.c.OWNER_TYPE == CONTACT, b.c.BOUND_TYPE == bound_type(CONTACT),
                                                    b.c.BOUND_ID == id_).order_by(b.c.OWNER_ID))
    return [{"CONTACT_ID": r.OWNER_ID, "SORT": r.SORT, "ROLE_ID": r.ROLE_ID or 0, "IS_PRIMARY": r.IS_PRIMARY}
            for r in rows]


# ------------------------------------------------------------------ duplicates
@method("crm.duplicate.findbycomm")
def duplicate_findbycomm(call: Call, p: dict):
    """``type`` EMAIL|PHONE, ``values`` (at most 20), ``entity_type`` LEAD|CONTACT|COMPANY (default all) ->
    ``{"CONTACT": [ids]}`` with keys only for hits (``[]`` when none); phones compare by digits, 8.. = 7..;
    once one type has 20 or more hits the later types are skipped."""
    ctype = str(get(p, "type") or "").upper()
    if ctype not in ("EMAIL", "PHONE"):
        raise ApiError("Communication type is not defined or invalid.", "Communication type is not defined or invalid.",
                       400)
    values = [str(v) for v in as_list(get(p, "values")) if str(v).strip()]
    if not values:
        raise ApiError("Values are not defined.", "Values are not defined.", 400)
    if len(values) > 20:
        raise ApiError("Too many values. Maximum is 20.", "Too many values. Maximum is 20.", 400)
    et = str(get(p, "entity_type") or "").upper()
    order = [("LEAD", 1), ("CONTACT", CONTACT), ("COMPANY", COMPANY)]
    if et:
        order = [x for x in order if x[0] == et]
        if not order:
            raise ApiError("Entity type is not defined or invalid.", "Entity type is not defined or invalid.", 400)
    norms = list({norm_comm(ctype, v) for v in values})
    fm = call.store.t["fm"]
    out = {}
    for name, etid in order:
        ids = [r[0] for r in call.ctx.conn.execute(
            sa.select(fm.c.ELEMENT_ID).where(fm.c.ENTITY_TYPE_ID == etid, fm.c.TYPE_ID == ctype,
                                             fm.c.VALUE_NORM.in_(norms)).distinct().order_by(fm.c.ELEMENT_ID))]
        if ids:
            out[name] = ids
        if len(ids) >= 20:
            break
    return out
