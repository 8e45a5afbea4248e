"""List filters as Bitrix24 reads them: the operator is a prefix of the key (reference section 4).

none or ``=`` equal (an array = IN); ``!=`` / ``!`` not equal; ``>`` ``>=`` ``<`` ``<=``; ``@`` / ``!@`` IN / NOT IN;
``%`` LIKE substring (no ``%`` in the value); ``=%`` / ``%=`` LIKE with the caller's own ``%``; ``!%`` ``!=%``
``!%=`` NOT LIKE. crm.item.list and crm.type.list also take groups ``{"0": {"logic": "OR", "0": {..}, "1": {..}}}``.
A filter value that cannot be of the field's type matches nothing.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import sqlalchemy as sa

from .params import as_list, as_map, to_int
from .values import parse_datetime

_OP = re.compile(r"^(!@|@|!=%|!%=|!%|=%|%=|%|>=|<=|>|<|!=|!|=)?(.*)$", re.S)
NEGATIVE = {"!", "!=", "!@", "!%", "!=%", "!%="}
LIKE_OPS = {"%", "!%", "=%", "%=", "!=%", "!%="}

Resolver = Callable[[str], Any]


def split_key(key: str) -> tuple[str, str]:
    m = _OP.match(key.strip())
    op, name = m.group(1) or "=", m.group(2).strip()
    return op, name


def coerce(kind: str, v: Any) -> Any:
    """A filter value as the column's Python type; raises ValueError when it cannot be one."""
    if v is None:
        return None
    if kind == "int":
        if isinstance(v, str) and v.strip() == "":
            return None
        n = to_int(v)
        if n is None:
            raise ValueError(v)
        return n
    if kind == "float":
        if isinstance(v, str) and v.strip() == "":
            return None
        return float(str(v).replace(",", "."))
    if kind == "date":
        if isinstance(v, str) and v.strip() == "":
            return None
        return parse_datetime(v)
    if kind == "char":
        if isinstance(v, bool):
            return "Y" if v else "N"
        return str(v)
    if kind == "bool":
        if isinstance(v, bool):
            return int(v)
        s = str(v).strip().upper()
        return 1 if s in ("1", "Y", "TRUE") else 0
    if isinstance(v, bool):
        return "1" if v else ""
    return str(v)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def column_clause(col, kind: str, op: str, value: Any):
    """One condition on a column; a list value is IN / NOT IN."""
    negative = op in NEGATIVE
    if isinstance(value, (list, dict)) and op in LIKE_OPS:
        parts = [column_clause(col, kind, op, x) for x in as_list(value)]
        if not parts:
            return sa.true() if negative else sa.false()
        return sa.and_(*parts) if negative else sa.or_(*parts)
    if isinstance(value, (list, dict)) or op in ("@", "!@"):
        items = as_list(value)
        try:
            coerced = [coerce(kind, x) for x in items]
        except (ValueError, TypeError):
            coerced = []
        coerced = [c for c in coerced if c is not None]
        if not coerced:
            return sa.true() if negative else sa.false()
        return col.not_in(coerced) if negative else col.in_(coerced)
    if op in LIKE_OPS:
        text = "" if value is None else str(value)
        target = col if kind in ("str", "char") else sa.cast(col, sa.String)
        if op in ("%", "!%"):
            pattern = "%" + _like_escape(text) + "%"
            cond = target.like(pattern, escape="\\")
        else:
            cond = target.like(text)
        return sa.or_(sa.not_(cond), col.is_(None)) if negative else cond
    try:
        v = coerce(kind, value)
    except (ValueError, TypeError):
        return sa.true() if negative else sa.false()
    if v is None or (kind == "str" and v == ""):
        empty = col.is_(None) if kind != "str" else sa.or_(col.is_(None), col == "")
        if op in ("=",):
            return empty
        if negative:
            return sa.not_(empty)
        return sa.false()
    if op == "=":
        return col == v
    if negative:
        return sa.or_(col != v, col.is_(None))
    if op == ">":
        return col > v
    if op == ">=":
        return col >= v
    if op == "<":
        return col < v
    if op == "<=":
        return col <= v
    return col == v


def compile_filter(flt: Any, resolve: Resolver, *, groups: bool = False, on_unknown=None) -> list:
    """Clauses for a filter map. ``resolve(name)`` returns ``fn(op, value) -> clause`` or None for an unknown
    field, which is ignored (legacy) or passed to ``on_unknown(name)`` (crm.item raises)."""
    m = as_map(flt)
    if not m:
        return []
    clauses = []
    for key, value in m.items():
        key = str(key)
        if groups and (key.isdigit() or key.lower() == "logic") and isinstance(value, (dict, list)):
            sub = as_map(value) or {}
            logic = str(sub.get("logic", sub.get("LOGIC", "AND"))).upper()
            parts = []
            for k2, v2 in sub.items():
                if str(k2).lower() == "logic":
                    continue
                if isinstance(v2, (dict, list)) and str(k2).isdigit():
                    inner = compile_filter(v2, resolve, groups=True, on_unknown=on_unknown)
                    if inner:
                        parts.append(sa.and_(*inner))
                else:
                    inner = compile_filter({k2: v2}, resolve, groups=True, on_unknown=on_unknown)
                    parts.extend(inner)
            if parts:
                clauses.append(sa.or_(*parts) if logic == "OR" else sa.and_(*parts))
            continue
        if key.lower() == "logic":
            continue
        op, name = split_key(key)
        fn = resolve(name)
        if fn is None:
            if on_unknown is not None:
                on_unknown(name)
            continue
        clause = fn(op, value)
        if clause is not None:
            clauses.append(clause)
    return clauses


def order_pairs(order: Any) -> list[tuple[str, bool]]:
    """[(field, descending)] of an order map ``{field: "ASC"|"DESC"}``."""
    m = as_map(order) or {}
    out = []
    for k, v in m.items():
        out.append((str(k), str(v).strip().upper() == "DESC"))
    return out

