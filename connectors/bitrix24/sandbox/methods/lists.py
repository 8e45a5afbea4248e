"""Universal lists: lists.add/get, lists.field.add/get, lists.element.add/update/get/delete (reference 5.8).

ELEMENT_CODE is required and unique in its list; ``lists.element.update`` overwrites the whole element (properties
not sent are cleared); ``lists.element.get`` answers strings, properties as maps by value id
(``"PROPERTY_951": {"3743": "1269"}``) and dates in the portal's (Russian) locale, ``31.12.2024 23:59:59``.
The sandbox answers every field when SELECT is not given (the docs say ``['ID']``; real portals answer more).
"""

from __future__ import annotations

import json
from datetime import timezone

import sqlalchemy as sa

from ..crm import PAGE
from ..envelope import PORTAL_TZ, ApiError, Result
from ..filters import NEGATIVE, column_clause, compile_filter, order_pairs
from ..params import as_list, as_map, get, to_bool, to_int
from ..values import parse_datetime
from . import Call, method

POSITIVE = {"!": "=", "!=": "=", "!@": "@", "!%": "%", "!=%": "=%", "!%=": "%="}
IBLOCK_TYPES = ("lists", "bitrix_processes", "lists_socnet")
FIELD_TYPES = ("S", "N", "L", "F", "G", "E", "S:Date", "S:DateTime", "S:HTML", "S:employee", "S:ECrm", "S:Money",
               "S:map_yandex", "S:DiskFile", "E:EList", "N:Sequence")


def missing(name: str) -> ApiError:
    return ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", f"Required parameter `{name}` is missing", 400)


def locale_dt(dt) -> str | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc).astimezone(PORTAL_TZ).strftime("%d.%m.%Y %H:%M:%S")


def _iblock(call: Call, p: dict, required: bool = True) -> dict | None:
    itype = get(p, "IBLOCK_TYPE_ID")
    if not itype:
        raise missing("IBLOCK_TYPE_ID")
    if str(itype) not in IBLOCK_TYPES:
        raise ApiError("ERROR_IBLOCK_NOT_FOUND", "Iblock type not found", 400)
    t = call.store.t["iblock"]
    iid, code = to_int(get(p, "IBLOCK_ID")), get(p, "IBLOCK_CODE")
    if iid is None and not code:
        if not required:
            return None
        raise missing("IBLOCK_ID")
    cond = t.c.ID == iid if iid is not None else t.c.CODE == str(code)
    r = call.ctx.conn.execute(sa.select(t).where(cond, t.c.IBLOCK_TYPE_ID == str(itype))).first()
    if r is None:
        raise ApiError("ERROR_IBLOCK_NOT_FOUND", "Iblock not found", 400)
    return dict(r._mapping)


def _fields_of(call: Call, iblock_id: int) -> dict[int, dict]:
    t = call.store.t["lfield"]
    rows = call.ctx.conn.execute(sa.select(t).where(t.c.IBLOCK_ID == iblock_id).order_by(t.c.SORT, t.c.ID))
    return {r.ID: dict(r._mapping) for r in rows}


@method("lists.add")
def lists_add(call: Call, p: dict):
    itype = get(p, "IBLOCK_TYPE_ID")
    if not itype:
        raise missing("IBLOCK_TYPE_ID")
    code = get(p, "IBLOCK_CODE")
    if not code:
        raise missing("IBLOCK_CODE")
    fields = as_map(get(p, "FIELDS"))
    if not fields or not str(fields.get("NAME") or "").strip():
        raise missing("FIELDS[NAME]")
    t = call.store.t["iblock"]
    conn = call.ctx.conn
    if conn.execute(sa.select(t.c.ID).where(t.c.IBLOCK_TYPE_ID == str(itype), t.c.CODE == str(code))).first():
        raise ApiError("ERROR_IBLOCK_ALREADY_EXISTS", "Iblock already exists", 400)
    res = conn.execute(sa.insert(t).values(
        IBLOCK_TYPE_ID=str(itype), CODE=str(code), NAME=str(fields["NAME"]), DESCRIPTION=fields.get("DESCRIPTION"),
        SORT=to_int(fields.get("SORT")) or 500, BIZPROC="Y" if to_bool(fields.get("BIZPROC")) else "N",
        SOCNET_GROUP_ID=to_int(get(p, "SOCNET_GROUP_ID"))))
    return int(res.inserted_primary_key[0])


@method("lists.get")
def lists_get(call: Call, p: dict):
    ib = _iblock(call, p, required=False)
    t = call.store.t["iblock"]
    if ib is None:
        rows = [dict(r._mapping) for r in call.ctx.conn.execute(
            sa.select(t).where(t.c.IBLOCK_TYPE_ID == str(get(p, "IBLOCK_TYPE_ID"))).order_by(t.c.ID))]
    else:
        rows = [ib]
    out = [{"ID": str(r["ID"]), "IBLOCK_TYPE_ID": r["IBLOCK_TYPE_ID"], "CODE": r["CODE"], "NAME": r["NAME"],
            "ACTIVE": "Y", "SORT": str(r["SORT"]), "DESCRIPTION": r["DESCRIPTION"] or "", "BIZPROC": r["BIZPROC"],
            "SOCNET_GROUP_ID": None if r["SOCNET_GROUP_ID"] is None else str(r["SOCNET_GROUP_ID"])} for r in rows]
    return Result(out, total=len(out))


@method("lists.field.add")
def field_add(call: Call, p: dict):
    ib = _iblock(call, p)
    fields = as_map(get(p, "FIELDS")) or {}
    name = str(fields.get("NAME") or "").strip()
    if not name:
        raise missing("FIELDS[NAME]")
    ftype = str(fields.get("TYPE") or "").strip()
    if not ftype:
        raise missing("FIELDS[TYPE]")
    if ftype not in FIELD_TYPES:
        raise ApiError("ERROR_SAVE_FIELD", f'Unknown field type "{ftype}"', 400)
    t = call.store.t["lfield"]
    res = call.ctx.conn.execute(sa.insert(t).values(
        IBLOCK_ID=ib["ID"], NAME=name, TYPE=ftype, CODE=fields.get("CODE"),
        IS_REQUIRED="Y" if to_bool(fields.get("IS_REQUIRED")) else "N",
        MULTIPLE="Y" if to_bool(fields.get("MULTIPLE")) else "N", SORT=to_int(fields.get("SORT")) or 500,
        SETTINGS=json.dumps(as_map(fields.get("SETTINGS")) or {}, ensure_ascii=False)))
    return f"PROPERTY_{int(res.inserted_primary_key[0])}"


def _field_out(f: dict) -> dict:
    return {"FIELD_ID": f"PROPERTY_{f['ID']}", "ID": str(f["ID"]), "SORT": str(f["SORT"]), "NAME": f["NAME"],
            "IS_REQUIRED": f["IS_REQUIRED"], "MULTIPLE": f["MULTIPLE"], "DEFAULT_VALUE": "", "TYPE": f["TYPE"],
            "PROPERTY_TYPE": f["TYPE"].split(":")[0], "CODE": f["CODE"],
            "SETTINGS": json.loads(f["SETTINGS"] or "{}")}


@method("lists.field.get")
def field_get(call: Call, p: dict):
    ib = _iblock(call, p)
    out = {"NAME": {"FIELD_ID": "NAME", "SORT": "10", "NAME": "Name", "IS_REQUIRED": "Y", "MULTIPLE": "N",
                    "DEFAULT_VALUE": "", "TYPE": "NAME"}}
    for f in _fields_of(call, ib["ID"]).values():
        out[f"PROPERTY_{f['ID']}"] = _field_out(f)
    want = get(p, "FIELD_ID")
    if want:
        return {want: out[want]} if want in out else []
    return out


# ------------------------------------------------------------------ elements
def _element(call: Call, ib: dict, p: dict, required: bool = True) -> dict | None:
    t = call.store.t["element"]
    eid, code = to_int(get(p, "ELEMENT_ID")), get(p, "ELEMENT_CODE")
    if eid is None and not code:
        if not required:
            return None
        raise missing("ELEMENT_ID")
    cond = t.c.ID == eid if eid is not None else t.c.CODE == str(code)
    r = call.ctx.conn.execute(sa.select(t).where(cond, t.c.IBLOCK_ID == ib["ID"])).first()
    if r is None:
        raise ApiError("ERROR_ELEMENT_NOT_FOUND", "Element not found", 400)
    return dict(r._mapping)


def _value_text(f: dict, v) -> str:
    t = f["TYPE"]
    if t in ("N", "N:Sequence"):
        try:
            float(str(v).replace(",", "."))
        except ValueError:
            raise ApiError("ERROR_ELEMENT_FIELD_VALUE", f'Invalid value "{v}" of field "{f["NAME"]}": a number is '
                                                        f'expected', 400) from None
        return str(v).replace(",", ".")
    if t in ("S:Date", "S:DateTime"):
        try:
            dt = parse_datetime(v)
        except ValueError:
            raise ApiError("ERROR_ELEMENT_FIELD_VALUE", f'Invalid value "{v}" of field "{f["NAME"]}": a date is '
                                                        f'expected', 400) from None
        text = locale_dt(dt)
        return text[:10] if t == "S:Date" else text
    return str(v)


def _property_rows(call: Call, ib: dict, fields: dict, error_code: str) -> list[dict]:
    defs = _fields_of(call, ib["ID"])
    rows = []
    given: set[int] = set()
    for key, raw in fields.items():
        key = str(key).upper()
        if not key.startswith("PROPERTY_"):
            continue
        fid = to_int(key[len("PROPERTY_"):])
        f = defs.get(fid) if fid is not None else None
        if f is None:
            continue  # unknown properties are ignored
        values = as_list(raw) if isinstance(raw, (list, dict)) else [raw]
        values = [v for v in values if v is not None and str(v) != ""]
        if f["MULTIPLE"] != "Y":
            values = values[:1]
        for v in values:
            if isinstance(v, (dict, list)):
                inner = as_list(v)
                v = inner[0] if inner else ""
            rows.append({"FIELD_ID": fid, "VALUE": _value_text(f, v)})
            given.add(fid)
    for fid, f in defs.items():
        if f["IS_REQUIRED"] == "Y" and fid not in given:
            raise ApiError(error_code, f'The field "{f["NAME"]}" is required.', 400)
    return rows


def _write_values(call: Call, element_id: int, rows: list[dict]) -> None:
    t = call.store.t["evalue"]
    call.ctx.conn.execute(sa.delete(t).where(t.c.ELEMENT_ID == element_id))
    if rows:
        call.ctx.conn.execute(sa.insert(t), [{**r, "ELEMENT_ID": element_id} for r in rows])


@method("lists.element.add")
def element_add(call: Call, p: dict):
    ib = _iblock(call, p)
    code = get(p, "ELEMENT_CODE")
    if not code:
        raise missing("ELEMENT_CODE")
    fields = as_map(get(p, "FIELDS")) or {}
    name = str(fields.get("NAME") or "").strip()
    if not name:
        raise ApiError("ERROR_ADD_ELEMENT", 'The field "Name" is required.', 400)
    t = call.store.t["element"]
    conn = call.ctx.conn
    if conn.execute(sa.select(t.c.ID).where(t.c.IBLOCK_ID == ib["ID"], t.c.CODE == str(code))).first():
        raise ApiError("ERROR_ELEMENT_ALREADY_EXISTS", "Element already exists", 400)
    props = _property_rows(call, ib, fields, "ERROR_ADD_ELEMENT")
    now = call.ctx.now
    res = conn.execute(sa.insert(t).values(IBLOCK_ID=ib["ID"], CODE=str(code), NAME=name,
                                           IBLOCK_SECTION_ID=to_int(get(p, "IBLOCK_SECTION_ID")) or None,
                                           CREATED_BY=call.user_id, MODIFIED_BY=call.user_id, DATE_CREATE=now,
                                           TIMESTAMP_X=now))
    eid = int(res.inserted_primary_key[0])
    _write_values(call, eid, props)
    return eid


@method("lists.element.update")
def element_update(call: Call, p: dict):
    ib = _iblock(call, p)
    el = _element(call, ib, p)
    fields = as_map(get(p, "FIELDS")) or {}
    name = str(fields.get("NAME") or "").strip()
    if not name:
        raise ApiError("ERROR_UPDATE_ELEMENT", 'The field "Name" is required.', 400)
    props = _property_rows(call, ib, fields, "ERROR_UPDATE_ELEMENT")
    t = call.store.t["element"]
    values = {"NAME": name, "MODIFIED_BY": call.user_id, "TIMESTAMP_X": call.ctx.now}
    if get(p, "IBLOCK_SECTION_ID") is not None:
        values["IBLOCK_SECTION_ID"] = to_int(get(p, "IBLOCK_SECTION_ID")) or None
    call.ctx.conn.execute(sa.update(t).where(t.c.ID == el["ID"]).values(**values))
    _write_values(call, el["ID"], props)  # the whole element is overwritten: properties not sent are cleared
    return True


@method("lists.element.delete")
def element_delete(call: Call, p: dict):
    ib = _iblock(call, p)
    el = _element(call, ib, p)
    t, v = call.store.t["element"], call.store.t["evalue"]
    call.ctx.conn.execute(sa.delete(v).where(v.c.ELEMENT_ID == el["ID"]))
    call.ctx.conn.execute(sa.delete(t).where(t.c.ID == el["ID"]))
    return True


@method("lists.element.get")
def element_get(call: Call, p: dict):
    ib = _iblock(call, p)
    t, v = call.store.t["element"], call.store.t["evalue"]
    cols = {"ID": (t.c.ID, "int"), "NAME": (t.c.NAME, "str"), "CODE": (t.c.CODE, "str"),
            "IBLOCK_SECTION_ID": (t.c.IBLOCK_SECTION_ID, "int"), "CREATED_BY": (t.c.CREATED_BY, "int"),
            "MODIFIED_BY": (t.c.MODIFIED_BY, "int"), "DATE_CREATE": (t.c.DATE_CREATE, "date"),
            "TIMESTAMP_X": (t.c.TIMESTAMP_X, "date")}
    defs = _fields_of(call, ib["ID"])

    def resolve(name):
        n = name.upper()
        if n in cols:
            col, kind = cols[n]
            return lambda op, val: column_clause(col, kind, op, val)
        if n.startswith("PROPERTY_"):
            fid = to_int(n[len("PROPERTY_"):])
            if fid not in defs:
                return None

            def prop_clause(op, val):
                inner = column_clause(v.c.VALUE, "str", POSITIVE.get(op, op), val)
                sub = sa.select(v.c.ELEMENT_ID).where(v.c.FIELD_ID == fid, inner)
                return t.c.ID.not_in(sub) if op in NEGATIVE else t.c.ID.in_(sub)
            return prop_clause
        return None

    clauses = [t.c.IBLOCK_ID == ib["ID"]]
    el = _element(call, ib, p, required=False)
    if el is not None:
        clauses.append(t.c.ID == el["ID"])
    clauses += compile_filter(get(p, "FILTER"), resolve)
    ordering = [(cols[n.upper()][0].desc() if desc else cols[n.upper()][0].asc())
                for n, desc in order_pairs(get(p, "ELEMENT_ORDER")) if n.upper() in cols]
    start = max(to_int(get(p, "start")) or 0, 0)
    conn = call.ctx.conn
    total = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*clauses)).scalar() or 0)
    rows = [dict(r._mapping) for r in conn.execute(
        sa.select(t).where(*clauses).order_by(*ordering, t.c.ID).offset(start).limit(PAGE))]
    ids = [r["ID"] for r in rows]
    values: dict[int, dict[int, dict]] = {i: {} for i in ids}
    if ids:
        for r in conn.execute(sa.select(v).where(v.c.ELEMENT_ID.in_(ids)).order_by(v.c.ID)):
            values[r.ELEMENT_ID].setdefault(r.FIELD_ID, {})[str(r.ID)] = r.VALUE
    select = [str(s).upper() for s in as_list(get(p, "SELECT"))]
    out = []
    for r in rows:
        full = {"ID": str(r["ID"]), "IBLOCK_ID": str(r["IBLOCK_ID"]), "NAME": r["NAME"],
                "IBLOCK_SECTION_ID": None if r["IBLOCK_SECTION_ID"] is None else str(r["IBLOCK_SECTION_ID"]),
                "CREATED_BY": str(r["CREATED_BY"]), "BP_PUBLISHED": "Y", "CODE": r["CODE"],
                "DATE_CREATE": locale_dt(r["DATE_CREATE"]), "TIMESTAMP_X": locale_dt(r["TIMESTAMP_X"]),
                "MODIFIED_BY": str(r["MODIFIED_BY"])}
        props = values.get(r["ID"], {})
        if select:
            o = {"ID": full["ID"]}
            for s in select:
                if s in full:
                    o[s] = full[s]
                elif s.startswith("PROPERTY_"):
                    fid = to_int(s[len("PROPERTY_"):])
                    if fid in defs:
                        o[s] = props.get(fid) or []  # PHP's empty array
        else:
            o = full
            for fid in defs:
                if fid in props:
                    o[f"PROPERTY_{fid}"] = props[fid]
        out.append(o)
    nxt = start + PAGE if len(rows) == PAGE and start + PAGE < total else None
    return Result(out, total=total, next=nxt)
