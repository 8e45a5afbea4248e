"""user.get (filter, sort/order, pages of 50) and user.current (reference: the official user.get page)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from ..crm import PAGE
from ..envelope import ApiError, Result, iso
from ..filters import column_clause, compile_filter
from ..params import as_map, get, to_int
from . import Call, method

_CONTROL = {"sort", "order", "filter", "admin_mode", "start", "auth"}


def user_out(r) -> dict:
    return {"ID": str(r.ID), "XML_ID": r.XML_ID, "ACTIVE": r.ACTIVE == "Y", "NAME": r.NAME, "LAST_NAME": r.LAST_NAME,
            "SECOND_NAME": r.SECOND_NAME or "", "EMAIL": r.EMAIL, "LAST_LOGIN": iso(r.LAST_LOGIN),
            "DATE_REGISTER": iso(r.DATE_REGISTER), "TIME_ZONE": "", "IS_ONLINE": "N", "TIMESTAMP_X": {},
            "LAST_ACTIVITY_DATE": {}, "PERSONAL_GENDER": "", "PERSONAL_MOBILE": r.PERSONAL_MOBILE or "",
            "WORK_PHONE": r.WORK_PHONE or "", "WORK_POSITION": r.WORK_POSITION or "",
            "UF_DEPARTMENT": json.loads(r.UF_DEPARTMENT or "[]"), "USER_TYPE": r.USER_TYPE or "employee"}


@method("user.get")
def user_get(call: Call, p: dict):
    t = call.store.t["user"]
    cols = {"ID": (t.c.ID, "int"), "ACTIVE": (t.c.ACTIVE, "char"), "NAME": (t.c.NAME, "str"),
            "LAST_NAME": (t.c.LAST_NAME, "str"), "SECOND_NAME": (t.c.SECOND_NAME, "str"), "EMAIL": (t.c.EMAIL, "str"),
            "XML_ID": (t.c.XML_ID, "str"), "WORK_POSITION": (t.c.WORK_POSITION, "str"),
            "USER_TYPE": (t.c.USER_TYPE, "str")}

    def resolve(name):
        n = name.upper()
        if n == "UF_DEPARTMENT":
            return lambda op, v: t.c.UF_DEPARTMENT.like(f"%{to_int(v) or 0}%")
        if n == "NAME_SEARCH":
            def search(op, v):
                pattern = f"%{v}%"
                return sa.or_(t.c.NAME.like(pattern), t.c.LAST_NAME.like(pattern), t.c.EMAIL.like(pattern))
            return search
        if n in cols:
            col, kind = cols[n]

            def clause(op, v):
                if n == "ACTIVE":
                    v = "Y" if str(v).lower() in ("y", "1", "true") else "N"
                if op == "=" and isinstance(v, str) and "%" in v:  # the docs' "Iva%" example
                    return col.like(v)
                return column_clause(col, kind, op, v)
            return clause
        return None

    flt = dict(as_map(get(p, "filter", "FILTER")) or {})
    for k, v in p.items():  # filter fields may also come at the top level (UF_DEPARTMENT, ID..)
        if k.lower() not in _CONTROL:
            flt.setdefault(k, v)
    clauses = compile_filter(flt, resolve)
    sort = str(get(p, "sort", "SORT") or "ID").upper()
    desc = str(get(p, "order", "ORDER") or "ASC").upper() == "DESC"
    col = cols.get(sort, (t.c.ID, "int"))[0]
    start = max(to_int(get(p, "start")) or 0, 0)
    conn = call.ctx.conn
    total = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*clauses)).scalar() or 0)
    rows = conn.execute(sa.select(t).where(*clauses).order_by(col.desc() if desc else col.asc(), t.c.ID)
                        .offset(start).limit(PAGE))
    out = [user_out(r) for r in rows]
    nxt = start + PAGE if len(out) == PAGE and start + PAGE < total else None
    return Result(out, total=total, next=nxt)


@method("user.current")
def user_current(call: Call, p: dict):
    t = call.store.t["user"]
    r = call.ctx.conn.execute(sa.select(t).where(t.c.ID == call.user_id)).first()
    if r is None:
        raise ApiError("NOT_FOUND", "User not found", 400)
    return user_out(r)
