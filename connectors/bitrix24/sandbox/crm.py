"""The CRM engine behind both API styles: add, update, read, list and delete records of any CRM object type,
with multi-fields, bindings (contact -> companies, deal/item -> contacts), parent links, pipelines and stages.

Method modules speak the protocol (parameter names, answers, error codes); this module keeps the data and its
rules (reference section 5):

* multi-fields on update: an entry without ``ID`` is ADDED; ``{ID, VALUE[, VALUE_TYPE]}`` overwrites that entry;
  ``{ID, DELETE: "Y"}``, ``{ID, VALUE: ""}`` or a bare ``{ID}`` deletes it; entries not mentioned stay;
* bindings: COMPANY_IDS / CONTACT_IDS replace the set, COMPANY_ID / CONTACT_ID name the primary one;
* deals: CATEGORY_ID 0 is the default pipeline (stages NEW.. of DEAL_STAGE), pipeline N has stages ``C<N>:<CODE>``;
  a smart process has stages ``DT<etid>_<category>:<CODE>``; a stage outside its pipeline is refused;
* historical dates: on legacy add with ``params[IMPORT]=Y`` DATE_CREATE/DATE_MODIFY/CREATED_BY_ID/MODIFY_BY_ID are
  taken from the caller; DATE_CREATE may not be earlier than the last created record of the type (reference 5.1):
  an earlier one is replaced by the current time. ``crm.item.batchImport`` refuses such a row instead (5.7).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .filters import NEGATIVE, column_clause, compile_filter, order_pairs
from .params import as_list, as_map, to_int
from .schema import COMPANY, CONTACT, DEAL, EntityDef, Field, auto_camel
from .storage import Store, utcnow
from .values import (FieldError, is_email, item_out, legacy_out, norm_comm, portal_today, to_column)

PAGE = 50
_MISSING = object()
# bound entity type of each owner type's binding set: contact -> companies; deal and items -> contacts
BOUND = {CONTACT: COMPANY, DEAL: CONTACT}
_STAGE_PREFIX_DEAL = re.compile(r"^C(\d+):")
_STAGE_PREFIX_ITEM = re.compile(r"^DT(\d+)_(\d+):")


def bound_type(etid: int) -> int:
    return BOUND.get(etid, CONTACT)


def kind_of(f: Field) -> str:
    if f.mult:
        return "str"
    if f.type == "double":
        return "float"
    if f.is_date:
        return "date"
    if f.type == "boolean":
        return "bool"
    if f.numeric:
        return "int"
    if f.type == "char":
        return "char"
    return "str"


class Ctx:
    """One command's view: the store, its open transaction, the calling user."""

    def __init__(self, store: Store, conn, user_id: int):
        self.store = store
        self.conn = conn
        self.user_id = user_id
        self.now = utcnow()


class Crm:
    def __init__(self, store: Store):
        self.s = store
        self.cache: dict = {}
        self.max_created: dict[int, datetime | None] = {}

    def invalidate(self) -> None:
        self.cache.clear()
        self.max_created.clear()

    # ------------------------------------------------------------------ pipelines and stages
    def stage_entity_id(self, etid: int, category_id: int) -> str:
        if etid == DEAL:
            return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"
        return f"DYNAMIC_{etid}_STAGE_{category_id}"

    def stage_prefix(self, etid: int, category_id: int) -> str:
        if etid == DEAL:
            return "" if category_id == 0 else f"C{category_id}:"
        return f"DT{etid}_{category_id}:"

    def categories(self, conn, etid: int) -> dict[int, dict]:
        key = ("categories", etid)
        if key not in self.cache:
            t = self.s.t["category"]
            rows = conn.execute(sa.select(t).where(t.c.ENTITY_TYPE_ID == etid).order_by(t.c.SORT, t.c.ID))
            cats = {r.ID: dict(r._mapping) for r in rows}
            if etid == DEAL:
                cats = {0: {"ID": 0, "ENTITY_TYPE_ID": DEAL, "NAME": "General", "SORT": 0, "IS_DEFAULT": "Y",
                            "IS_SYSTEM": "N", "CODE": None, "ORIGIN_ID": None, "ORIGINATOR_ID": None}, **cats}
            self.cache[key] = cats
        return self.cache[key]

    def default_category(self, conn, etid: int) -> int | None:
        cats = self.categories(conn, etid)
        for cid, c in cats.items():
            if c["IS_DEFAULT"] == "Y":
                return cid
        return next(iter(cats), None)

    def stages(self, conn, etid: int, category_id: int) -> list[tuple[str, str | None]]:
        key = ("stages", etid, category_id)
        if key not in self.cache:
            t = self.s.t["status"]
            rows = conn.execute(sa.select(t.c.STATUS_ID, t.c.SEMANTICS).where(
                t.c.ENTITY_ID == self.stage_entity_id(etid, category_id)).order_by(t.c.SORT, t.c.ID))
            self.cache[key] = [(r[0], r[1]) for r in rows]
        return self.cache[key]

    def category_of_stage(self, etid: int, stage_id: str) -> int | None:
        if etid == DEAL:
            m = _STAGE_PREFIX_DEAL.match(stage_id)
            return int(m.group(1)) if m else 0
        m = _STAGE_PREFIX_ITEM.match(stage_id)
        if m and int(m.group(1)) == etid:
            return int(m.group(2))
        return None

    # ------------------------------------------------------------------ reading rows
    def row(self, conn, d: EntityDef, id_: int) -> dict | None:
        t = self.s.table(d.etid)
        q = self.s.stmt(("row", d.etid), lambda: sa.select(t).where(t.c.ID == sa.bindparam("b_id")))
        r = conn.execute(q, {"b_id": id_}).first()
        return None if r is None else dict(r._mapping)

    def fm_of(self, conn, etid: int, ids: list[int]) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {i: [] for i in ids}
        if not ids:
            return out
        fm = self.s.t["fm"]
        q = self.s.stmt("fm_of", lambda: sa.select(fm.c.ID, fm.c.ELEMENT_ID, fm.c.TYPE_ID, fm.c.VALUE_TYPE,
                                                   fm.c.VALUE).where(
            fm.c.ENTITY_TYPE_ID == sa.bindparam("b_et"),
            fm.c.ELEMENT_ID.in_(sa.bindparam("b_ids", expanding=True))).order_by(fm.c.ID))
        rows = conn.execute(q, {"b_et": etid, "b_ids": ids})
        for r in rows:
            out[r.ELEMENT_ID].append({"ID": r.ID, "TYPE_ID": r.TYPE_ID, "VALUE_TYPE": r.VALUE_TYPE, "VALUE": r.VALUE})
        return out

    def bindings_of(self, conn, etid: int, ids: list[int]) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {i: [] for i in ids}
        if not ids:
            return out
        b = self.s.t["binding"]
        q = self.s.stmt("bindings_of", lambda: sa.select(b).where(
            b.c.OWNER_TYPE == sa.bindparam("b_ot"), b.c.BOUND_TYPE == sa.bindparam("b_bt"),
            b.c.OWNER_ID.in_(sa.bindparam("b_ids", expanding=True))).order_by(b.c.SORT, b.c.ID))
        rows = conn.execute(q, {"b_ot": etid, "b_bt": bound_type(etid), "b_ids": ids})
        for r in rows:
            out[r.OWNER_ID].append({"ID": r.BOUND_ID, "SORT": r.SORT, "IS_PRIMARY": r.IS_PRIMARY,
                                    "ROLE_ID": r.ROLE_ID or 0})
        return out

    def parents_of(self, conn, etid: int, ids: list[int]) -> dict[int, dict[int, int]]:
        out: dict[int, dict[int, int]] = {i: {} for i in ids}
        if not ids:
            return out
        p = self.s.t["parent"]
        q = self.s.stmt("parents_of", lambda: sa.select(p).where(
            p.c.CHILD_TYPE == sa.bindparam("b_ct"), p.c.CHILD_ID.in_(sa.bindparam("b_ids", expanding=True))))
        for r in conn.execute(q, {"b_ct": etid, "b_ids": ids}):
            out[r.CHILD_ID][r.PARENT_TYPE] = r.PARENT_ID
        return out

    # ------------------------------------------------------------------ writing
    def _prepare(self, ctx: Ctx, d: EntityDef, values: dict, *, creating: bool, import_mode: bool,
                 allow_immutable: bool = False):
        cols: dict[str, Any] = {}
        fm: dict[str, Any] = {}
        binding: Any = _MISSING
        primary: Any = _MISSING
        parents: dict[int, int | None] = {}
        for name, raw in values.items():
            f = d.fields.get(name)
            if f is None or not d.feature_on(f):
                continue
            if f.ro and not (creating and import_mode and f.import_only):
                continue
            if f.imm and not creating and not allow_immutable:
                continue
            v = f.virtual
            if v == "fm":
                fm[f.upper] = raw
            elif v == "binding":
                binding = self._ids(f, raw)
            elif v == "primary":
                ids = self._ids(f, raw)
                primary = ids[0] if ids else None
            elif v == "parent":
                ids = self._ids(f, raw)
                parents[int(f.upper.rsplit("_", 1)[1])] = ids[0] if ids else None
            elif v is None:
                cols[f.upper] = to_column(f, raw)
        return cols, fm, binding, primary, parents

    @staticmethod
    def _ids(f: Field, raw: Any) -> list[int]:
        out = []
        for x in as_list(raw) if isinstance(raw, (list, dict)) else ([] if raw in (None, "") else [raw]):
            if isinstance(x, dict):
                x = next(iter(x.values()), None)
            n = to_int(x)
            if n is None:
                raise FieldError(f, f'Invalid value "{x}" of field "{f.title}": an id is expected')
            if n > 0:
                out.append(n)
        return out

    def _apply_stage(self, ctx: Ctx, d: EntityDef, cols: dict, old: dict | None) -> None:
        """Category and stage of a deal or a smart-process item: defaults, consistency, moved time/by."""
        etid = d.etid
        has_stages = etid == DEAL or (d.type_row or {}).get("isStagesEnabled") == "Y"
        cat = cols.get("CATEGORY_ID", _MISSING)
        stage = cols.get("STAGE_ID", _MISSING)
        if old is None:
            if cat is _MISSING or cat is None:
                derived = self.category_of_stage(etid, stage) if isinstance(stage, str) and stage else None
                cat = derived if derived is not None else self.default_category(ctx.conn, etid)
        else:
            if cat is _MISSING or cat is None:
                cat = old["CATEGORY_ID"] if old["CATEGORY_ID"] is not None else self.default_category(ctx.conn, etid)
        f_cat = d.fields["CATEGORY_ID"]
        if cat not in self.categories(ctx.conn, etid):
            raise FieldError(f_cat, f'Invalid value "{cat}" of field "{f_cat.title}": there is no such pipeline')
        cols["CATEGORY_ID"] = cat
        if not has_stages:
            cols.pop("STAGE_ID", None)
            return
        stages = self.stages(ctx.conn, etid, cat)
        codes = [s for s, _ in stages]
        old_stage = old.get("STAGE_ID") if old else None
        if stage is _MISSING or stage is None or stage == "":
            if old is not None and old_stage in codes:
                stage = old_stage
            else:
                stage = codes[0] if codes else None
        elif stage not in codes:
            f_st = d.fields["STAGE_ID"]
            raise FieldError(f_st, f'Invalid value "{stage}" of field "{f_st.title}": the stage is not in pipeline '
                                   f'{cat}')
        cols["STAGE_ID"] = stage
        semantics = dict(stages).get(stage)
        if etid == DEAL:
            cols["STAGE_SEMANTIC_ID"] = semantics or "P"
            cols["CLOSED"] = "Y" if semantics in ("S", "F") else "N"
        if old is None or stage != old_stage:
            if etid == DEAL:
                cols["MOVED_TIME"], cols["MOVED_BY_ID"] = ctx.now, ctx.user_id
            else:
                cols.setdefault("MOVED_TIME", ctx.now)
                cols.setdefault("MOVED_BY", ctx.user_id)
                if old is not None:
                    cols["PREVIOUS_STAGE_ID"] = old_stage

    def _required(self, d: EntityDef, cols: dict) -> None:
        for f in d.fields.values():
            if f.req and f.virtual is None and not f.ro and d.feature_on(f):
                v = cols.get(f.upper)
                if v is None or (isinstance(v, str) and v.strip() == "") or v == "[]":
                    raise FieldError(f, f'Field "{f.title}" is required.', "CRM_FIELD_ERROR_REQUIRED")

    def add(self, ctx: Ctx, d: EntityDef, values: dict, *, import_mode: bool = False,
            strict_import: bool = False) -> int:
        cols, fm, binding, primary, parents = self._prepare(ctx, d, values, creating=True, import_mode=import_mode)
        self._required(d, cols)
        now, uid = ctx.now, ctx.user_id
        created_key = d.date_create
        if d.legacy:
            cols.setdefault("ASSIGNED_BY_ID", uid)
            if cols.get("ASSIGNED_BY_ID") is None:
                cols["ASSIGNED_BY_ID"] = uid
            cols.setdefault("CREATED_BY_ID", uid)
            cols.setdefault("MODIFY_BY_ID", cols["CREATED_BY_ID"] or uid)
            cols.setdefault("OPENED", "Y")
            if d.etid == CONTACT:
                cols.setdefault("EXPORT", "Y")
            if d.etid == COMPANY:
                cols.setdefault("IS_MY_COMPANY", "N")
                cols.setdefault("CURRENCY_ID", "RUB")
            if d.etid == DEAL:
                cols.setdefault("CURRENCY_ID", "RUB")
                if cols.get("OPPORTUNITY") is None:
                    cols["OPPORTUNITY"] = 0.0
                cols.setdefault("IS_MANUAL_OPPORTUNITY", "N")
                for k in ("IS_RECURRING", "IS_RETURN_CUSTOMER", "IS_REPEATED_APPROACH"):
                    cols.setdefault(k, "N")
                cols["IS_NEW"] = "Y"
                if cols.get("BEGINDATE") is None:
                    cols["BEGINDATE"] = portal_today()
                if cols.get("CLOSEDATE") is None:
                    cols["CLOSEDATE"] = portal_today() + timedelta(days=7)
                self._apply_stage(ctx, d, cols, None)
        else:
            cols.setdefault("CREATED_BY", uid)
            cols.setdefault("UPDATED_BY", cols["CREATED_BY"] or uid)
            if cols.get("ASSIGNED_BY_ID") is None:
                cols["ASSIGNED_BY_ID"] = uid
            cols.setdefault("OPENED", "Y")
            cols.setdefault("CURRENCY_ID", "RUB")
            if cols.get("OPPORTUNITY") is None:
                cols["OPPORTUNITY"] = 0.0
            cols.setdefault("IS_MANUAL_OPPORTUNITY", "N")
            if (d.type_row or {}).get("isBeginCloseDatesEnabled") == "Y":
                if cols.get("BEGINDATE") is None:
                    cols["BEGINDATE"] = portal_today()
                if cols.get("CLOSEDATE") is None:
                    cols["CLOSEDATE"] = portal_today() + timedelta(days=7)
            self._apply_stage(ctx, d, cols, None)
        # creation time: now, or the caller's in import mode (not before the last created record of the type)
        given = cols.get(created_key)
        last = self._last_created(ctx, d)
        if given is not None:
            problem = None
            if last is not None and given < last:
                problem = "earlier than the creation time of the last created item"
            elif given > now + timedelta(seconds=5):
                problem = "in the future"
            if problem and strict_import:
                f = d.fields[created_key]
                raise FieldError(f, f'Invalid value of field "{f.title}": {problem}')
            if problem:
                given = None
                cols.pop(created_key)
        created = given if given is not None else now
        cols[created_key] = created
        modify_key = "DATE_MODIFY" if d.legacy else "UPDATED_TIME"
        if cols.get(modify_key) is None:
            cols[modify_key] = created
        elif cols[modify_key] < created:
            if strict_import:
                f = d.fields[modify_key]
                raise FieldError(f, f'Invalid value of field "{f.title}": earlier than the creation time')
            cols[modify_key] = created
        fm_rows = self._fm_new_rows(d, fm) if fm else []
        t = self.s.table(d.etid)
        res = ctx.conn.execute(self.s.stmt(("insert", d.etid), lambda: sa.insert(t)), cols)
        new_id = int(res.inserted_primary_key[0])
        self.max_created[d.etid] = max(created, last) if last is not None else created
        if "TITLE" in d.fields and not cols.get("TITLE"):
            title = f"Deal #{new_id}" if d.etid == DEAL else (
                f"{(d.type_row or {}).get('title') or 'Item'} #{new_id}" if not d.legacy else None)
            if title:
                self._update_row(ctx, d, new_id, {"TITLE": title})
        if fm_rows:
            fmt = self.s.t["fm"]
            ctx.conn.execute(self.s.stmt("fm_insert", lambda: sa.insert(fmt)),
                             [{**r, "ENTITY_TYPE_ID": d.etid, "ELEMENT_ID": new_id} for r in fm_rows])
        if binding is not _MISSING or primary is not _MISSING:
            ids = [] if binding is _MISSING else list(binding)
            if primary not in (_MISSING, None) and primary not in ids:
                ids.insert(0, primary)
            self.set_bindings(ctx, d.etid, new_id, [{"ID": i, "IS_PRIMARY": "Y" if i == primary else None}
                                                    for i in ids])
        for petid, pid in parents.items():
            self._set_parent(ctx, d.etid, new_id, petid, pid)
        return new_id

    def _last_created(self, ctx: Ctx, d: EntityDef) -> datetime | None:
        if d.etid not in self.max_created:
            t = self.s.table(d.etid)
            col = t.c[d.date_create]
            self.max_created[d.etid] = ctx.conn.execute(sa.select(sa.func.max(col))).scalar()
        return self.max_created[d.etid]

    def update(self, ctx: Ctx, d: EntityDef, id_: int, values: dict, *, allow_immutable: bool = False) -> None:
        old = self.row(ctx.conn, d, id_)
        if old is None:
            raise KeyError(id_)
        cols, fm, binding, primary, parents = self._prepare(ctx, d, values, creating=False, import_mode=False,
                                                            allow_immutable=allow_immutable)
        for f in d.fields.values():
            if f.req and f.upper in cols and f.virtual is None:
                v = cols[f.upper]
                if v is None or (isinstance(v, str) and not v.strip()):
                    raise FieldError(f, f'Field "{f.title}" is required.', "CRM_FIELD_ERROR_REQUIRED")
        if "CATEGORY_ID" in d.fields and ("STAGE_ID" in cols or "CATEGORY_ID" in cols):
            if "CATEGORY_ID" in cols and cols["CATEGORY_ID"] != old["CATEGORY_ID"] and "STAGE_ID" not in cols:
                cols["STAGE_ID"] = None  # a new pipeline starts at its first stage
            self._apply_stage(ctx, d, cols, old)
        if d.legacy:
            cols["DATE_MODIFY"], cols["MODIFY_BY_ID"] = ctx.now, ctx.user_id
        else:
            cols["UPDATED_TIME"], cols["UPDATED_BY"] = ctx.now, ctx.user_id
        self._update_row(ctx, d, id_, cols)
        if fm:
            self._fm_update(ctx, d, id_, fm)
        if binding is not _MISSING:
            ids = list(binding)
            if primary not in (_MISSING, None) and primary not in ids:
                ids.insert(0, primary)
            pr = primary if primary not in (_MISSING, None) else None
            self.set_bindings(ctx, d.etid, id_, [{"ID": i, "IS_PRIMARY": "Y" if i == pr else None} for i in ids])
        elif primary is not _MISSING:
            current = self.bindings_of(ctx.conn, d.etid, [id_])[id_]
            if primary is None:
                rest = [b for b in current if b["IS_PRIMARY"] != "Y"]
                self.set_bindings(ctx, d.etid, id_, [{"ID": b["ID"], "SORT": b["SORT"]} for b in rest])
            else:
                items = [{"ID": b["ID"], "SORT": b["SORT"], "IS_PRIMARY": "Y" if b["ID"] == primary else "N"}
                         for b in current]
                if primary not in [b["ID"] for b in current]:
                    items.insert(0, {"ID": primary, "IS_PRIMARY": "Y"})
                self.set_bindings(ctx, d.etid, id_, items)
        for petid, pid in parents.items():
            self._set_parent(ctx, d.etid, id_, petid, pid)

    def _update_row(self, ctx: Ctx, d: EntityDef, id_: int, cols: dict) -> None:
        if not cols:
            return
        t = self.s.table(d.etid)
        q = self.s.stmt(("update", d.etid), lambda: sa.update(t).where(t.c.ID == sa.bindparam("b_id")))
        ctx.conn.execute(q, {"b_id": id_, **cols})

    def delete(self, ctx: Ctx, d: EntityDef, id_: int) -> bool:
        t = self.s.table(d.etid)
        if ctx.conn.execute(sa.delete(t).where(t.c.ID == id_)).rowcount == 0:
            return False
        T = self.s.t
        ctx.conn.execute(sa.delete(T["fm"]).where(T["fm"].c.ENTITY_TYPE_ID == d.etid, T["fm"].c.ELEMENT_ID == id_))
        b = T["binding"]
        ctx.conn.execute(sa.delete(b).where(sa.or_(sa.and_(b.c.OWNER_TYPE == d.etid, b.c.OWNER_ID == id_),
                                                   sa.and_(b.c.BOUND_TYPE == d.etid, b.c.BOUND_ID == id_))))
        p = T["parent"]
        ctx.conn.execute(sa.delete(p).where(sa.or_(sa.and_(p.c.CHILD_TYPE == d.etid, p.c.CHILD_ID == id_),
                                                   sa.and_(p.c.PARENT_TYPE == d.etid, p.c.PARENT_ID == id_))))
        return True

    # ------------------------------------------------------------------ multi-fields
    def _fm_entry(self, raw: Any) -> dict:
        if isinstance(raw, (dict, list)):
            return as_map(raw) or {}
        return {"VALUE": raw}

    def _fm_value(self, type_id: str, entry: dict) -> tuple[str, str]:
        value = entry.get("VALUE", entry.get("value"))
        value = "" if value is None else str(value).strip()
        vt = str(entry.get("VALUE_TYPE", entry.get("valueType")) or "").strip().upper() or (
            "WORK" if type_id in ("PHONE", "EMAIL", "WEB") else "OTHER")
        if value and type_id == "EMAIL" and not is_email(value):
            raise FieldError(None, f'Invalid e-mail address: "{value}"', "ERROR_CORE")
        if len(value) > 250:
            raise FieldError(None, f"The {type_id} value is longer than 250 characters", "ERROR_CORE")
        return value, vt

    def _fm_new_rows(self, d: EntityDef, fm: dict) -> list[dict]:
        rows = []
        for type_id, raw in fm.items():
            for entry in as_list(raw) if isinstance(raw, (list, dict)) else [raw]:
                e = self._fm_entry(entry)
                value, vt = self._fm_value(type_id, e)
                if value:
                    rows.append({"TYPE_ID": type_id, "VALUE_TYPE": vt, "VALUE": value,
                                 "VALUE_NORM": norm_comm(type_id, value)[:255]})
        return rows

    def _fm_update(self, ctx: Ctx, d: EntityDef, id_: int, fm: dict) -> None:
        t = self.s.t["fm"]
        existing = {e["ID"]: e for e in self.fm_of(ctx.conn, d.etid, [id_])[id_]}
        new_rows = []
        for type_id, raw in fm.items():
            for entry in as_list(raw) if isinstance(raw, (list, dict)) else [raw]:
                e = self._fm_entry(entry)
                eid = to_int(e.get("ID", e.get("id")))
                if eid is None:
                    value, vt = self._fm_value(type_id, e)
                    if value:
                        new_rows.append({"ENTITY_TYPE_ID": d.etid, "ELEMENT_ID": id_, "TYPE_ID": type_id,
                                         "VALUE_TYPE": vt, "VALUE": value,
                                         "VALUE_NORM": norm_comm(type_id, value)[:255]})
                    continue
                cur = existing.get(eid)
                if cur is None or cur["TYPE_ID"] != type_id:
                    continue  # someone else's entry: ignored
                deleting = str(e.get("DELETE", "")).upper() == "Y" or (
                    "VALUE" not in e and "value" not in e) or str(e.get("VALUE", e.get("value")) or "").strip() == ""
                if deleting:
                    ctx.conn.execute(self.s.stmt("fm_delete", lambda: sa.delete(t).where(
                        t.c.ID == sa.bindparam("b_id"))), {"b_id": eid})
                    continue
                value, vt = self._fm_value(type_id, {"VALUE": e.get("VALUE", e.get("value")),
                                                     "VALUE_TYPE": e.get("VALUE_TYPE", e.get("valueType"))
                                                     or cur["VALUE_TYPE"]})
                ctx.conn.execute(self.s.stmt("fm_update", lambda: sa.update(t).where(
                    t.c.ID == sa.bindparam("b_id"))),
                    {"b_id": eid, "VALUE": value, "VALUE_TYPE": vt, "VALUE_NORM": norm_comm(type_id, value)[:255]})
        if new_rows:
            ctx.conn.execute(self.s.stmt("fm_insert", lambda: sa.insert(t)), new_rows)

    # ------------------------------------------------------------------ bindings and parents
    def set_bindings(self, ctx: Ctx, etid: int, id_: int, items: list[dict]) -> None:
        """Replace the binding set of one record; no IS_PRIMARY=Y makes the first primary; SORT default
        (i+1)*10 (never below the previous one + 10)."""
        b = self.s.t["binding"]
        ctx.conn.execute(self.s.stmt("binding_clear", lambda: sa.delete(b).where(
            b.c.OWNER_TYPE == sa.bindparam("b_ot"), b.c.OWNER_ID == sa.bindparam("b_id"),
            b.c.BOUND_TYPE == sa.bindparam("b_bt"))), {"b_ot": etid, "b_id": id_, "b_bt": bound_type(etid)})
        seen: list[int] = []
        rows = []
        primary_seen = any(str(it.get("IS_PRIMARY") or "").upper() == "Y" for it in items)
        last_sort = 0
        for n, it in enumerate(items):
            bid = it["ID"]
            if bid in seen:
                continue
            seen.append(bid)
            sort = to_int(it.get("SORT"))
            if sort is None:
                sort = max((n + 1) * 10, last_sort + 10)
            last_sort = sort
            is_primary = str(it.get("IS_PRIMARY") or "").upper() == "Y"
            if not primary_seen and not rows:
                is_primary = True
            rows.append({"OWNER_TYPE": etid, "OWNER_ID": id_, "BOUND_TYPE": bound_type(etid), "BOUND_ID": bid,
                         "SORT": sort, "IS_PRIMARY": "Y" if is_primary else "N", "ROLE_ID": 0})
        if sum(r["IS_PRIMARY"] == "Y" for r in rows) > 1:  # only the first Y stays primary
            first = True
            for r in rows:
                if r["IS_PRIMARY"] == "Y":
                    r["IS_PRIMARY"] = "Y" if first else "N"
                    first = False
        if rows:
            ctx.conn.execute(self.s.stmt("binding_insert", lambda: sa.insert(b)), rows)

    def _set_parent(self, ctx: Ctx, etid: int, id_: int, parent_type: int, parent_id: int | None) -> None:
        p = self.s.t["parent"]
        ctx.conn.execute(self.s.stmt("parent_clear", lambda: sa.delete(p).where(
            p.c.CHILD_TYPE == sa.bindparam("b_ct"), p.c.CHILD_ID == sa.bindparam("b_id"),
            p.c.PARENT_TYPE == sa.bindparam("b_pt"))), {"b_ct": etid, "b_id": id_, "b_pt": parent_type})
        if parent_id:
            ctx.conn.execute(self.s.stmt("parent_insert", lambda: sa.insert(p)),
                             {"CHILD_TYPE": etid, "CHILD_ID": id_, "PARENT_TYPE": parent_type, "PARENT_ID": parent_id})

    # ------------------------------------------------------------------ lists
    def resolver(self, d: EntityDef, item_style: bool):
        t = self.s.table(d.etid)
        T = self.s.t

        def resolve(name: str):
            f = d.resolve(name, camel_ok=item_style, upper_ok=True)
            if f is None and not item_style:
                f = d.fields.get(name.upper())
            if f is None:
                return None
            kind = kind_of(f)
            v = f.virtual
            if v is None:
                col = t.c[f.upper]
                if f.mult:
                    return lambda op, val: _multi_clause(col, f, op, val)
                return lambda op, val: column_clause(col, kind, op, val)
            if v == "fm":
                fm = T["fm"]

                def fm_clause(op, val):
                    values = [str(x) for x in (as_list(val) if isinstance(val, (list, dict)) else [val])]
                    sub = sa.select(fm.c.ELEMENT_ID).where(fm.c.ENTITY_TYPE_ID == d.etid, fm.c.TYPE_ID == f.upper,
                                                           fm.c.VALUE.in_(values))
                    return t.c.ID.not_in(sub) if op in NEGATIVE else t.c.ID.in_(sub)
                return fm_clause
            if v == "has":
                fm = T["fm"]
                type_id = f.upper[4:]
                type_id = "IM" if type_id == "IMOL" else type_id

                def has_clause(op, val):
                    sub = sa.select(fm.c.ELEMENT_ID).where(fm.c.ENTITY_TYPE_ID == d.etid, fm.c.TYPE_ID == type_id)
                    yes = str(val).upper() in ("Y", "1", "TRUE")
                    if op in NEGATIVE:
                        yes = not yes
                    return t.c.ID.in_(sub) if yes else t.c.ID.not_in(sub)
                return has_clause
            if v in ("binding", "primary"):
                b = T["binding"]

                def bind_clause(op, val):
                    sub_col = sa.select(b.c.OWNER_ID).where(b.c.OWNER_TYPE == d.etid,
                                                            b.c.BOUND_TYPE == bound_type(d.etid))
                    return _id_sub_clause(t.c.ID, sub_col, b.c.BOUND_ID, op, val)
                return bind_clause
            if v == "parent":
                p = T["parent"]
                petid = int(f.upper.rsplit("_", 1)[1])

                def parent_clause(op, val):
                    sub_col = sa.select(p.c.CHILD_ID).where(p.c.CHILD_TYPE == d.etid, p.c.PARENT_TYPE == petid)
                    return _id_sub_clause(t.c.ID, sub_col, p.c.PARENT_ID, op, val)
                return parent_clause
            if v == "const":
                return lambda op, val: column_clause(sa.literal(d.etid), "int", op, val)
            return None
        return resolve

    def list(self, ctx: Ctx, d: EntityDef, *, flt: Any, order: Any, start: int, item_style: bool,
             on_unknown=None) -> tuple[list[dict], int | None]:
        t = self.s.table(d.etid)
        clauses = compile_filter(flt, self.resolver(d, item_style), groups=item_style, on_unknown=on_unknown)
        q = sa.select(t)
        if clauses:
            q = q.where(*clauses)
        ordering = []
        for name, desc in order_pairs(order):
            f = d.resolve(name, camel_ok=item_style, upper_ok=True) or (None if item_style else
                                                                        d.fields.get(name.upper()))
            if f is None or f.virtual is not None:
                continue
            col = t.c[f.upper]
            ordering.append(col.desc() if desc else col.asc())
        ordering.append(t.c.ID.asc())
        q = q.order_by(*ordering)
        total = None
        if start >= 0:
            cq = sa.select(sa.func.count()).select_from(t)
            if clauses:
                cq = cq.where(*clauses)
            total = int(ctx.conn.execute(cq).scalar() or 0)
            q = q.offset(start)
        q = q.limit(PAGE)
        rows = [dict(r._mapping) for r in ctx.conn.execute(q)]
        return rows, total

    # ------------------------------------------------------------------ rendering
    def extras(self, ctx: Ctx, d: EntityDef, ids: list[int], need_fm: bool, need_bind: bool,
               need_parent: bool) -> dict:
        return {"fm": self.fm_of(ctx.conn, d.etid, ids) if need_fm and d.has_fm else {},
                "bind": self.bindings_of(ctx.conn, d.etid, ids) if need_bind else {},
                "parent": self.parents_of(ctx.conn, d.etid, ids) if need_parent else {}}

    def legacy_fields(self, d: EntityDef, select: list | None, get_mode: bool) -> list[Field]:
        if get_mode or not select:
            return [f for f in d.fields.values() if f.virtual != "binding" and (get_mode or f.virtual != "fm")]
        names = [str(s) for s in select]
        chosen: list[Field] = [d.fields["ID"]]
        for n in names:
            if n == "*":
                chosen += [f for f in d.fields.values() if f.uf is None and f.virtual not in ("fm", "binding")]
            elif n.upper() == "UF_*":
                chosen += [f for f in d.fields.values() if f.uf is not None]
            else:
                f = d.fields.get(n) or d.fields.get(n.upper())
                if f is not None and f.virtual != "binding":
                    chosen.append(f)
        out, seen = [], set()
        for f in chosen:
            if f.upper not in seen:
                seen.add(f.upper)
                out.append(f)
        return out

    def render_legacy(self, ctx: Ctx, d: EntityDef, rows: list[dict], select: list | None = None,
                      get_mode: bool = False) -> list[dict]:
        fields = self.legacy_fields(d, select, get_mode)
        ids = [r["ID"] for r in rows]
        need_fm = any(f.virtual in ("fm", "has") for f in fields)
        need_bind = any(f.virtual == "primary" for f in fields)
        need_parent = any(f.virtual == "parent" for f in fields)
        ex = self.extras(ctx, d, ids, need_fm, need_bind, need_parent)
        out = []
        for r in rows:
            rid = r["ID"]
            o: dict[str, Any] = {}
            for f in fields:
                v = f.virtual
                if v is None:
                    o[f.upper] = legacy_out(f, r.get(f.upper))
                elif v == "fm":
                    entries = [e for e in ex["fm"].get(rid, []) if e["TYPE_ID"] == f.upper]
                    if entries or not get_mode:
                        o[f.upper] = [{"ID": str(e["ID"]), "VALUE_TYPE": e["VALUE_TYPE"], "VALUE": e["VALUE"],
                                       "TYPE_ID": e["TYPE_ID"]} for e in entries]
                elif v == "has":
                    type_id = "IM" if f.upper == "HAS_IMOL" else f.upper[4:]
                    o[f.upper] = "Y" if any(e["TYPE_ID"] == type_id for e in ex["fm"].get(rid, [])) else "N"
                elif v == "primary":
                    prim = [b["ID"] for b in ex["bind"].get(rid, []) if b["IS_PRIMARY"] == "Y"]
                    o[f.upper] = str(prim[0]) if prim else None
                elif v == "parent":
                    pid = ex["parent"].get(rid, {}).get(int(f.upper.rsplit("_", 1)[1]))
                    o[f.upper] = None if pid is None else str(pid)
            out.append(o)
        return out

    def item_fields(self, d: EntityDef, select: list | None, list_mode: bool) -> tuple[list[Field], bool]:
        """(fields, with fm) for crm.item: all of them on get/add/update; on list all but fm, fm with '*'."""
        base = [f for f in d.fields.values() if f.virtual != "fm"]
        if not list_mode:
            return base, d.has_fm
        if not select:
            return base, False
        names = [str(s) for s in select]
        if "*" in names:
            return base, d.has_fm
        chosen = [d.fields["ID"]]
        fm = False
        for n in names:
            if n == "fm":
                fm = d.has_fm
                continue
            f = d.resolve(n)
            if f is not None and f.virtual != "fm":
                chosen.append(f)
        if "ENTITY_TYPE_ID" in d.fields:
            chosen.append(d.fields["ENTITY_TYPE_ID"])
        out, seen = [], set()
        for f in chosen:
            if f.upper not in seen:
                seen.add(f.upper)
                out.append(f)
        return out, fm

    def render_item(self, ctx: Ctx, d: EntityDef, rows: list[dict], select: list | None = None,
                    list_mode: bool = False, original_uf: bool = False) -> list[dict]:
        fields, with_fm = self.item_fields(d, select, list_mode)
        ids = [r["ID"] for r in rows]
        need_bind = any(f.virtual in ("binding", "primary") for f in fields)
        need_parent = any(f.virtual == "parent" for f in fields)
        ex = self.extras(ctx, d, ids, with_fm, need_bind, need_parent)
        out = []
        for r in rows:
            rid = r["ID"]
            o: dict[str, Any] = {}
            for f in fields:
                name = f.upper if (original_uf and f.uf is not None) else f.camel
                if not d.feature_on(f):
                    o[name] = None
                    continue
                v = f.virtual
                if v is None:
                    val = item_out(f, r.get(f.upper))
                    if val is None and f.upper in ("COMPANY_ID", "MYCOMPANY_ID", "WEBFORM_ID"):
                        val = 0
                    o[name] = val
                elif v == "primary":
                    prim = [b["ID"] for b in ex["bind"].get(rid, []) if b["IS_PRIMARY"] == "Y"]
                    o[name] = prim[0] if prim else 0
                elif v == "binding":
                    o[name] = [b["ID"] for b in ex["bind"].get(rid, [])]
                elif v == "parent":
                    o[name] = ex["parent"].get(rid, {}).get(int(f.upper.rsplit("_", 1)[1]))
                elif v == "const":
                    o[name] = d.etid
                elif v == "has":
                    type_id = "IM" if f.upper == "HAS_IMOL" else f.upper[4:]
                    o[name] = "Y" if any(e["TYPE_ID"] == type_id for e in ex["fm"].get(rid, [])) else "N"
            if with_fm:
                entries = ex["fm"].get(rid, [])
                o["fm"] = [{"id": e["ID"], "valueType": e["VALUE_TYPE"], "value": e["VALUE"],
                            "typeId": e["TYPE_ID"]} for e in entries]
                if not list_mode:
                    o.update(fm_aliases(entries))
            out.append(o)
        return out


def fm_aliases(entries: list[dict]) -> dict:
    """crm.item.get's read-only first values per type: phone, email, phoneWork, emailHome.."""
    first: dict[tuple[str, str], str] = {}
    by_type: dict[str, str] = {}
    for e in entries:
        first.setdefault((e["TYPE_ID"], e["VALUE_TYPE"]), e["VALUE"])
        by_type.setdefault(e["TYPE_ID"], e["VALUE"])
    out = {}
    for vt in ("MOBILE", "WORK", "MAILING"):
        out[auto_camel(f"PHONE_{vt}")] = first.get(("PHONE", vt), "")
    for vt in ("HOME", "WORK", "MAILING"):
        out[auto_camel(f"EMAIL_{vt}")] = first.get(("EMAIL", vt), "")
    out["skype"] = first.get(("IM", "SKYPE"))
    out["icq"] = first.get(("IM", "ICQ"))
    out["imol"] = first.get(("IM", "IMOL"), "")
    out["email"] = by_type.get("EMAIL", "")
    out["phone"] = by_type.get("PHONE", "")
    return out


def _id_sub_clause(id_col, sub, value_col, op: str, val: Any):
    items = as_list(val) if isinstance(val, (list, dict)) else [val]
    ids = [to_int(x) for x in items]
    ids = [i for i in ids if i is not None]
    negative = op in NEGATIVE
    if op not in ("=", "!", "!=", "@", "!@"):
        return None
    if not ids or ids == [0]:
        # "no link": records without a binding / parent
        any_sub = sub
        return id_col.in_(any_sub) if negative else id_col.not_in(any_sub)
    s = sub.where(value_col.in_(ids))
    return id_col.not_in(s) if negative else id_col.in_(s)


def _multi_clause(col, f: Field, op: str, val: Any):
    """A multiple field (a JSON list in its column): equality means "one of its values is"."""
    items = as_list(val) if isinstance(val, (list, dict)) else [val]
    parts = []
    for x in items:
        try:
            stored = json.loads(to_column(f, [x]))
        except (FieldError, ValueError):
            continue
        if stored:
            parts.append(col.like("%" + json.dumps(stored[0], ensure_ascii=False) + "%"))
    if not parts:
        return sa.true() if op in NEGATIVE else sa.false()
    cond = sa.or_(*parts)
    return sa.or_(sa.not_(cond), col.is_(None)) if op in NEGATIVE else cond

