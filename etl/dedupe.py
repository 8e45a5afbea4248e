"""Dedupe: records that are one contact or company under different keys become one record in the target.

A pipeline's ``dedupe:`` block gives match rules, each a list of canonical fields that must all agree
(``[[phone], [email]]`` for contacts, ``[[inn, kpp]]`` for companies). Phones and e-mails hold several values: any
shared value counts. Matching is transitive within a batch (A shares a phone with B, B an e-mail with C: one group).

Groups live in the state store (key -> group, group -> target id and merged record, record -> group), so a record
read in a later batch or a later run joins the group loaded before; a record new to us can also be looked up in the
target (``crm.duplicate.findbycomm`` on Bitrix24) before it is created. An entity found there that we did not load is
never overwritten: the record is linked to it and reported.

Policies:
- ``first``: the first record read is the survivor and keeps its own values;
- ``newest``: the values of the record with the latest ``newest_by`` win (ties: the one read first);
- ``fill_empty``: the survivor's values, each empty field filled from the next record that has it; phones and
  e-mails are the union of the group's.

Accounting: the survivor of a new group is *created*; a record merged into a group counts as *updated* (it was
loaded into the survivor's entity: its source id maps to that target id in the crosswalk, so links to it resolve)
and also as *merged*; on later runs an unchanged record is *unchanged* as before. ``etl dedupe report`` lists the
groups.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable

import pyarrow as pa

from connectors.base import HASH, SOURCE_ID, TARGET_ID
from etl.config import DedupeSpec
from etl.stages.base import ROW
from etl.state import DedupeCommit, DedupeGroup, StateStore
from schemas import Entity

MULTI_FIELDS = ("phone", "email", "web")
_NON_DIGIT = re.compile(r"\D+")
_SPACES = re.compile(r"\s+")

# find(field, values, fields) -> {value: [{"id": target id, field: value...}]}: entities in the target with them
TargetFinder = Callable[[str, list[str], list[str]], dict[str, list[dict]]]


def split_values(text: Any) -> list[str]:
    """A ';'-separated multi-value field -> its values (a phone's ``;ext=`` stays with its number)."""
    if text is None:
        return []
    out: list[str] = []
    for part in str(text).split(";"):
        p = part.strip()
        if not p:
            continue
        if p.startswith("ext=") and out:
            out[-1] = f"{out[-1]};{p}"
        else:
            out.append(p)
    return out


def normal_phone(value: str) -> str | None:
    """A phone as a match value: its digits (a Russian 8... trunk prefix as 7), with the extension if any."""
    number, _, ext = value.partition(";ext=")
    digits = _NON_DIGIT.sub("", number)
    if len(digits) == 11 and digits[0] == "8":
        digits = "7" + digits[1:]
    elif len(digits) == 10 and not number.strip().startswith("+"):
        digits = "7" + digits
    if len(digits) < 5:
        return None
    ext = _NON_DIGIT.sub("", ext)
    return "+" + digits + (f"x{ext}" if ext else "")


def normal_text(value: Any) -> str | None:
    text = _SPACES.sub(" ", str(value).strip().casefold().replace("ё", "е"))
    return text or None


def field_values(fld: str, value: Any) -> list[str]:
    """The match values of one field of one record."""
    if value is None:
        return []
    if fld == "phone":
        return list(dict.fromkeys(v for v in map(normal_phone, split_values(value)) if v))
    if fld in MULTI_FIELDS:
        return list(dict.fromkeys(v for v in map(normal_text, split_values(value)) if v))
    v = normal_text(value)
    return [v] if v else []


def match_keys(record: dict, rules: list[list[str]]) -> list[str]:
    """Every match key of a record: ``rule:value[|value...]``, one per combination of the rule's field values."""
    keys: list[str] = []
    for rule in rules:
        combos = [""]
        for fld in rule:
            vals = field_values(fld, record.get(fld))
            if not vals:
                combos = []
                break
            combos = [f"{c}|{v}" if c else v for c in combos for v in vals]
        name = "+".join(rule)
        keys.extend(_bounded(f"{name}:{c}") for c in combos)
    return list(dict.fromkeys(keys))


def _bounded(key: str, limit: int = 200) -> str:
    """A key the state store's 255-character columns hold: a long one keeps its start and a digest of the rest."""
    if len(key) <= limit:
        return key
    return key[:limit - 41] + "#" + hashlib.sha1(key.encode()).hexdigest()


def same_value(a: Any, b: Any) -> bool:
    """Do two values of a ``distinct_by`` field agree? An empty one agrees with anything; an initial ("В.") with
    any name that starts with its letter."""
    x, y = normal_text(a) if a is not None else None, normal_text(b) if b is not None else None
    if not x or not y:
        return True
    x, y = x.rstrip("."), y.rstrip(".")
    if len(x) == 1 or len(y) == 1:
        return x[0] == y[0]
    return x == y


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return v


def _from_json(v: Any, t: pa.DataType) -> Any:
    if v is None:
        return None
    if pa.types.is_timestamp(t):
        return datetime.fromisoformat(v)
    if pa.types.is_date(t):
        return date.fromisoformat(v)
    return v


def _rank(v: Any) -> str | None:
    return None if v is None else str(_jsonable(v))


def _newer(rank: str | None, best: str | None) -> bool:
    """Does ``rank`` beat ``best`` (an undated record never does; ties keep the one read first)?"""
    return rank is not None and (best is None or rank > best)


@dataclass
class Follower:
    """A record of the batch whose target id comes from another write (its group's) or from the target."""

    source_id: str
    content_hash: str
    label: str  # updated (merged now, or its group written), else unchanged
    write_id: str | None  # the source id of the write that gives its target id
    target_id: str | None  # a target id known already
    merged: bool  # merged into its group by this batch


@dataclass
class _Pending:
    group: DedupeGroup | None  # None: a new group, created by this batch
    group_id: str
    record: dict  # the merged record to write (canonical fields)
    rank: str | None
    members: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # sid, match key, note


@dataclass
class DedupePlan:
    creates: pa.Table
    updates: pa.Table
    followers: list[Follower]
    silent: set[str]  # write ids that are no record of this batch: neither counted nor put in the crosswalk
    pending: list[_Pending]
    new_keys: list[tuple[str, str]]
    policy_needs_record: bool

    def commit(self, target_ids: dict[str, str]) -> DedupeCommit:
        """The state changes once the writes are done: ``target_ids`` maps write ids to what the target gave."""
        out = DedupeCommit()
        done: set[str] = set()
        for p in self.pending:
            tid = p.group.target_id if p.group is not None else target_ids.get(p.group_id)
            if tid is None:
                continue  # the group's write failed: its records are rejected and nothing is remembered
            done.add(p.group_id)
            foreign = bool(p.group and p.group.foreign)
            text = _record_text(p.record) if self.policy_needs_record else None
            out.groups.append(DedupeGroup(p.group_id, tid, foreign, text,
                                          hashlib.md5(text.encode()).hexdigest() if text else None, p.rank))
            out.members.extend((sid, p.group_id, key, note) for sid, key, note in p.members)
        out.keys = [(k, g) for k, g in self.new_keys if g in done]
        return out


def _record_text(record: dict) -> str:
    return json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False, sort_keys=True, default=str)


def record_hash(record: dict) -> str:
    return hashlib.md5(_record_text(record).encode()).hexdigest()


class Deduper:
    """Plans the merges of one pipeline's batches (see the module's docstring)."""

    def __init__(self, pipeline: str, spec: DedupeSpec, entity: Entity, store: StateStore):
        self.pipeline = pipeline
        self.spec = spec
        self.store = store
        self.fields = entity.field_names + [l.id_field for l in entity.links]
        self.multi = [f for f in MULTI_FIELDS if f in entity.by_name]
        self._types: dict[str, pa.DataType] = {}
        # a dry run commits nothing: what earlier batches of it would have stored is kept here
        self._mem_keys: dict[str, list[str]] = {}
        self._mem_members: dict[str, str] = {}
        self._mem_groups: dict[str, DedupeGroup] = {}

    def remember(self, commit: DedupeCommit) -> None:
        """Dry run: keep a batch's dedupe state in memory, as if committed."""
        for k, g in commit.keys:
            held = self._mem_keys.setdefault(k, [])
            if g not in held:
                held.append(g)
        for sid, g, _, _ in commit.members:
            self._mem_members[sid] = g
        for g in commit.groups:
            self._mem_groups[g.group_id] = g

    # ------------------------------------------------------------------ merging values
    def _fold(self, base: dict, other: dict) -> dict:
        """fill_empty: ``base`` with its empty fields filled from ``other``; multi-value fields as a union."""
        out = dict(base)
        for f in self.fields:
            if f in self.multi:
                seen, keep = set(), []
                for v in [*split_values(base.get(f)), *split_values(other.get(f))]:
                    k = field_values(f, v)
                    k = k[0] if k else v.casefold()
                    if k not in seen:
                        seen.add(k)
                        keep.append(v)
                out[f] = ";".join(keep) if keep else None
            elif _empty(out.get(f)) and not _empty(other.get(f)):
                out[f] = other[f]
        return out

    def _values(self, row: dict) -> dict:
        return {f: row.get(f) for f in self.fields}

    def _merge(self, group: DedupeGroup | None, survivor: dict | None, others: list[dict]) -> tuple[dict, str | None]:
        """The group's record after this batch, and its rank. ``survivor``: the survivor's row if read now."""
        stored = None
        if group is not None and group.record:
            raw = json.loads(group.record)
            stored = {f: _from_json(raw.get(f), self._types.get(f, pa.string())) for f in self.fields}
        policy = self.spec.policy
        by = self.spec.newest_by
        if policy == "first":
            base = survivor if survivor is not None else (stored or {})
            return self._values(base), None
        if policy == "newest":
            best, best_rank = (stored, group.rank) if stored is not None else (None, None)
            for r in ([survivor] if survivor is not None else []) + others:
                rk = _rank(r.get(by))
                if best is None or _newer(rk, best_rank):
                    best, best_rank = r, rk
            return self._values(best or {}), best_rank
        base = survivor if survivor is not None else stored
        chain = ([stored] if survivor is not None and stored is not None else []) + others
        if base is None:
            base, chain = chain[0], chain[1:]
        out = self._values(base)
        for r in chain:
            out = self._fold(out, r)
        return out, None

    # ------------------------------------------------------------------ the plan
    def plan(self, creates: pa.Table, updates: pa.Table, find: TargetFinder | None = None) -> DedupePlan:
        """Group the records to create (new to us) or update (changed) by their match keys; return the writes that
        remain. Both tables carry TARGET_ID (null for creates)."""
        schema = creates.schema
        self._types = {f.name: f.type for f in schema}
        combined = pa.concat_tables([creates, updates])
        rows = combined.to_pylist()
        order = sorted(range(len(rows)), key=lambda j: rows[j][ROW])
        rows = [rows[j] for j in order]
        known_tid = dict(zip(updates.column(SOURCE_ID).to_pylist(), updates.column(TARGET_ID).to_pylist()))
        keys = [match_keys(r, self.spec.match) for r in rows]
        sids = [r[SOURCE_ID] for r in rows]
        member_of = self.store.dedupe_member_groups(self.pipeline, [s for s in sids if s in known_tid])
        member_of.update((s, self._mem_members[s]) for s in sids if s in self._mem_members)
        all_keys = [k for ks in keys for k in ks]
        key_group = self.store.dedupe_key_groups(self.pipeline, all_keys)
        for k in all_keys:
            for g in self._mem_keys.get(k, ()):
                if g not in key_group.setdefault(k, []):
                    key_group[k].append(g)
        guard = self.spec.distinct_by

        def agree(a: dict, b: dict) -> bool:
            return all(same_value(a.get(f), b.get(f)) for f in guard)

        comps = _components(keys, (lambda i, j: agree(rows[i], rows[j])) if guard else None)

        # the existing group the free records of each component join: a member's, else the first key's
        wanted = {member_of[s] for s in sids if s in member_of} | {g for gs in key_group.values() for g in gs}
        groups = self.store.dedupe_groups(self.pipeline, list(wanted))
        groups.update((g, self._mem_groups[g]) for g in wanted if g in self._mem_groups)
        if guard:  # a group whose record disagrees with a record of ours is not that record's group
            stored = {g: json.loads(v.record) for g, v in groups.items() if v.record}

            def fits(g: str, idx: list[int]) -> bool:
                return g not in stored or all(agree(stored[g], rows[i]) for i in idx)
        else:
            def fits(g: str, idx: list[int]) -> bool:
                return True
        units: list[tuple[str | None, list[int]]] = []
        free_comps: dict[int, list[int]] = {}
        for c, idx in comps.items():
            by_group: dict[str, list[int]] = {}
            free: list[int] = []
            for i in idx:
                g = member_of.get(sids[i])
                (by_group.setdefault(g, []) if g in groups else free).append(i)
            gid = next(iter(by_group), None) or next(
                (g for i in free for k in keys[i] for g in key_group.get(k, ()) if g in groups and fits(g, free)),
                None)
            for g, members in by_group.items():
                if g != gid:
                    units.append((g, members))
            loaded = [i for i in free if sids[i] in known_tid]
            apart = loaded if gid is not None else loaded[1:]  # an entity of its own is never merged into another
            units.extend((None, [i]) for i in apart)
            rest = sorted(by_group.get(gid, []) + [i for i in free if i not in apart]) if gid else \
                [i for i in free if i not in apart]
            if rest:
                units.append((gid, rest))
                if gid is None and not loaded:
                    free_comps[len(units) - 1] = rest
        foreign: dict[int, tuple[str, str]] = {}
        if find is not None and self.spec.against_target and free_comps:
            foreign = self._find_in_target(find, rows, free_comps, agree if guard else None)

        out = _Out()
        for u, (gid, idx) in enumerate(units):
            group = groups.get(gid) if gid else None
            note = None
            if group is None and u in foreign:
                tid, key = foreign[u]
                group = DedupeGroup(f"target:{tid}", tid, foreign=True)
                note = f"matched entity {tid} already in the target, which keeps its values"
                for i in idx:
                    keys[i] = [key, *keys[i]] if key not in keys[i] else keys[i]
            if group is None and len(idx) == 1 and sids[idx[0]] not in known_tid:
                self._single(idx[0], rows, keys, key_group, out)  # most records: new, and nobody's copy
            else:
                self._unit(group, idx, rows, keys, known_tid, member_of, key_group, note, out)

        def table(taken: list[int], made: list[dict]) -> pa.Table:
            # rows written as read are taken from the batch; only merged ones are built again
            parts = [combined.take(pa.array([order[i] for i in taken], pa.int64()))] if taken else []
            if made:
                parts.append(pa.Table.from_pylist(made, schema=schema))
            return pa.concat_tables(parts) if parts else schema.empty_table()

        return DedupePlan(
            table(out.create_rows, out.creates), table(out.update_rows, out.updates),
            out.followers, out.silent, out.pending, out.new_keys, self.spec.policy != "first" or bool(guard))

    def _single(self, i: int, rows: list[dict], keys: list[list[str]], key_group: dict[str, list[str]],
                out: "_Out") -> None:
        """A record new to us that matches nothing: created as read; a group of its own."""
        row = rows[i]
        sid = row[SOURCE_ID]
        p = _Pending(None, sid, self._values(row), _rank(row.get(self.spec.newest_by or "")))
        p.members.append((sid, None, None))
        out.pending.append(p)
        _register(keys[i], sid, key_group, out)
        out.create_rows.append(i)

    def _unit(self, group: DedupeGroup | None, idx: list[int], rows: list[dict], keys: list[list[str]],
              known_tid: dict[str, str], member_of: dict[str, str], key_group: dict[str, list[str]], note: str | None,
              out: "_Out") -> None:
        """One group's records of this batch: the survivor, the merged record, the write and the followers."""
        sids = [rows[i][SOURCE_ID] for i in idx]
        if group is not None:
            gid = group.group_id
            survivor_i = next((i for i in idx if rows[i][SOURCE_ID] == gid), None)
        else:
            loaded = [i for i in idx if rows[i][SOURCE_ID] in known_tid]
            survivor_i = loaded[0] if loaded else idx[0]
            if not loaded and self.spec.policy == "newest":
                by = self.spec.newest_by
                for i in idx[1:]:
                    if _newer(_rank(rows[i].get(by)), _rank(rows[survivor_i].get(by))):
                        survivor_i = i
            gid = rows[survivor_i][SOURCE_ID]
        survivor = rows[survivor_i] if survivor_i is not None else None
        others = [rows[i] for i in idx if i != survivor_i]
        if group is None and not others:  # a record of its own (a new one takes _single)
            record, rank = self._values(survivor), _rank(survivor.get(self.spec.newest_by or ""))
        else:
            record, rank = self._merge(group, survivor, others)
        p = _Pending(group, gid, record, rank)
        out.pending.append(p)
        as_read = survivor is not None and not others and group is None

        # the key that joined each record: one the group had, or one another record of the unit shares
        shared = Counter(k for i in idx for k in keys[i]) if len(idx) > 1 else {}
        joined = {i: next((k for k in keys[i] if gid in key_group.get(k, ()) or shared.get(k, 0) > 1), None)
                  for i in idx} if group is not None or len(idx) > 1 else {}
        for i in idx:
            _register(keys[i], gid, key_group, out)
        for i, sid in zip(idx, sids):
            if sid not in member_of:
                p.members.append((sid, None if i == survivor_i else joined.get(i), note))

        write = None
        if group is not None and group.foreign:
            pass  # an entity someone else made: linked to, never written
        elif group is None and survivor is not None and survivor[SOURCE_ID] not in known_tid:
            write = survivor
            if as_read:
                out.create_rows.append(survivor_i)
            else:
                out.creates.append({**survivor, **record})
        else:
            tid = group.target_id if group is not None else known_tid[gid]
            if self.spec.policy == "first" or (group is not None and group.record is None and survivor is None):
                changed = survivor is not None  # only the survivor's own values are ever written
            else:
                changed = group is None or record_hash(record) != group.record_hash
            if changed:
                template = survivor if survivor is not None else rows[idx[0]]
                write = template
                if as_read:
                    out.update_rows.append(survivor_i)
                else:
                    out.updates.append({**template, **record, SOURCE_ID: gid, TARGET_ID: tid})
                if survivor is None:
                    out.silent.add(gid)
        fixed = group.target_id if group is not None else known_tid.get(gid)
        for i, sid in zip(idx, sids):
            if i == survivor_i and write is not None:
                continue  # counted with its own write
            newly = i != survivor_i and sid not in member_of
            out.followers.append(Follower(
                sid, rows[i][HASH], "updated" if newly or write is not None else "unchanged",
                gid if write is not None else None, None if write is not None else fixed, newly))

    def _find_in_target(self, find: TargetFinder, rows: list[dict], units: dict[int, list[int]],
                        agree: Callable[[dict, dict], bool] | None) -> dict[int, tuple[str, str]]:
        """unit -> (target id, match key) for the new units whose phone or e-mail an entity in the target holds
        (one we loaded ourselves is never taken: our own groups decided about it; with ``distinct_by`` the entity
        must agree with every record of the unit)."""
        fields = [r[0] for r in self.spec.match if len(r) == 1 and r[0] in ("phone", "email")]
        out: dict[int, tuple[str, str]] = {}
        for fld in fields:
            want: dict[str, list[int]] = {}
            for u, idx in units.items():
                if u in out:
                    continue
                for i in idx:
                    for v in split_values(rows[i].get(fld)):
                        want.setdefault(v.partition(";ext=")[0] if fld == "phone" else v, []).append(u)
            if not want:
                continue
            hits = find(fld, list(want), list(self.spec.distinct_by))
            ours = self.store.dedupe_targets(self.pipeline, [e["id"] for es in hits.values() for e in es])
            for value, entities in hits.items():
                for u in want.get(value, []):
                    if u in out:
                        continue
                    for e in entities:
                        if e["id"] in ours or (agree and not all(agree(e, rows[i]) for i in units[u])):
                            continue
                        nv = field_values(fld, value)
                        out[u] = (e["id"], f"{fld}:{nv[0] if nv else value}")
                        break
        return out


def _components(keys: list[list[str]], agree: Callable[[int, int], bool] | None = None) -> dict[int, list[int]]:
    """Records that share a key, transitively: root index -> the indices, in order. With ``agree``, two components
    join only when every pair across them agrees."""
    parent = list(range(len(keys)))
    members = {i: [i] for i in range(len(keys))}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    holders: dict[str, list[int]] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            held = holders.setdefault(k, [])
            for j in held:
                a, b = root(i), root(j)
                if a != b and (agree is None or all(agree(x, y) for x in members[a] for y in members[b])):
                    lo, hi = min(a, b), max(a, b)
                    parent[hi] = lo
                    members[lo] += members.pop(hi)
            held.append(i)
    comps: dict[int, list[int]] = {}
    for i in range(len(keys)):
        comps.setdefault(root(i), []).append(i)
    return comps


def _register(keys: list[str], gid: str, key_group: dict[str, list[str]], out: "_Out") -> None:
    """These keys lead to group ``gid`` from now on (besides the groups they led to)."""
    for k in keys:
        held = key_group.setdefault(k, [])
        if gid not in held:
            held.append(gid)
            out.new_keys.append((k, gid))


@dataclass
class _Out:
    creates: list[dict] = field(default_factory=list)  # writes built from merged values
    updates: list[dict] = field(default_factory=list)
    create_rows: list[int] = field(default_factory=list)  # writes of records as read (their index in rows)
    update_rows: list[int] = field(default_factory=list)
    followers: list[Follower] = field(default_factory=list)
    silent: set[str] = field(default_factory=set)
    pending: list[_Pending] = field(default_factory=list)
    new_keys: list[tuple[str, str]] = field(default_factory=list)


__all__ = ["Deduper", "DedupePlan", "Follower", "match_keys", "field_values", "normal_phone", "split_values"]
