"""A live Bitrix24 portal as a source: CRM companies, contacts, deals, smart-process items and universal-list
elements over REST (../shared/reference/bitrix24-rest.md, sections 4 and 5). Reads only, never writes.

    src = PortalSource(lambda: Bitrix24Client(webhook), "contact", mode="incremental")
    for batch in src.read(None, 500): batch.table   # flat string columns named as the portal names them

* Fast keyset paging: ``start=-1`` (no COUNT), order by ID ascending, ``>ID`` of the last row seen; 50 rows a page.
* ``mode: incremental`` orders by the modification time (legacy ``DATE_MODIFY``, crm.item ``updatedTime``) and then
  the id, and filters ``>=`` the watermark: rows on the watermark's own second with an id up to ``last_id`` were
  read already and are skipped, so many rows sharing one timestamp are neither lost nor read twice. When a whole
  page shares one timestamp, the rest of that second is paged by id (``=DATE_MODIFY`` and ``>ID``).
* The cursor is ``{mode, last_id, watermark}``; ``next_pass`` keeps it in incremental mode (the next run reads what
  changed since), and starts again from the beginning in full mode.
* Values: multi-fields (PHONE, EMAIL, WEB, IM) become their VALUEs joined by ';'; list properties (maps by value
  id) their values joined by ';'; numbers and legacy strings alike become text ("37", "19999.99"); null stays null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterator

import pyarrow as pa

from connectors.base import ConnectorError, Source, SourceBatch, TerminalError

PAGE = 50

# entity -> (list method, id field, modification-time field or None, default select)
_LEGACY_COMMON = ["ASSIGNED_BY_ID", "CREATED_BY_ID", "MODIFY_BY_ID", "DATE_CREATE", "DATE_MODIFY", "OPENED",
                  "COMMENTS", "SOURCE_ID", "SOURCE_DESCRIPTION", "ORIGINATOR_ID", "ORIGIN_ID"]
ENTITIES: dict[str, tuple[str, str, str | None, list[str]]] = {
    "company": ("crm.company.list", "ID", "DATE_MODIFY",
                ["ID", "TITLE", "COMPANY_TYPE", "INDUSTRY", "EMPLOYEES", "CURRENCY_ID", "REVENUE", "IS_MY_COMPANY",
                 *_LEGACY_COMMON, "PHONE", "EMAIL", "WEB"]),
    "contact": ("crm.contact.list", "ID", "DATE_MODIFY",
                ["ID", "HONORIFIC", "NAME", "SECOND_NAME", "LAST_NAME", "BIRTHDATE", "TYPE_ID", "POST",
                 "COMPANY_ID", *_LEGACY_COMMON, "PHONE", "EMAIL"]),
    "deal": ("crm.deal.list", "ID", "DATE_MODIFY",
             ["ID", "TITLE", "TYPE_ID", "CATEGORY_ID", "STAGE_ID", "PROBABILITY", "CURRENCY_ID", "OPPORTUNITY",
              "COMPANY_ID", "CONTACT_ID", "BEGINDATE", "CLOSEDATE", "CLOSED", *_LEGACY_COMMON]),
    "smart_process": ("crm.item.list", "id", "updatedTime",
                      ["id", "title", "xmlId", "categoryId", "stageId", "assignedById", "createdBy", "updatedBy",
                       "createdTime", "updatedTime", "companyId", "contactId", "opportunity", "currencyId",
                       "sourceId", "sourceDescription", "originatorId", "originId"]),
    "list_element": ("lists.element.get", "ID", None,
                     ["ID", "NAME", "CODE", "IBLOCK_SECTION_ID", "CREATED_BY", "MODIFIED_BY", "DATE_CREATE",
                      "TIMESTAMP_X"]),
}
MODES = ("full", "incremental")


def _text(v: Any) -> str | None:
    """One portal value as flat text: multi-fields and list properties joined by ';', numbers as text."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "Y" if v else "N"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):  # a list property: {value id: value}; or a single multi-field entry
        if "VALUE" in v or "value" in v:
            return _text(v.get("VALUE", v.get("value")))
        parts = [_text(x) for x in v.values()]
        return ";".join(p for p in parts if p not in (None, "")) or None
    if isinstance(v, (list, tuple)):
        parts = [_text(x) for x in v]
        return ";".join(p for p in parts if p not in (None, "")) or None
    return str(v)


def _ts(v: Any) -> datetime | None:
    if not v:
        return None
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        return None


def _id(v: Any) -> int:
    return int(float(v))


class PortalSource(Source):
    """Rows of one CRM entity (or a smart process, or a universal list) of a live portal."""

    def __init__(self, client_factory: Callable[[], Any], entity: str, *, select: list[str] | None = None,
                 entity_type_id: int | None = None, iblock_id: int | None = None, iblock_code: str | None = None,
                 iblock_type: str = "lists", mode: str = "full", filter: dict | None = None,
                 name: str = "bitrix24_portal"):
        if entity not in ENTITIES:
            raise TerminalError(f"{name}: unknown entity {entity!r} (known: {', '.join(ENTITIES)})")
        if mode not in MODES:
            raise TerminalError(f"{name}: unknown mode {mode!r} (known: {', '.join(MODES)})")
        self.method, self.idf, self.tsf, default = ENTITIES[entity]
        if mode == "incremental" and self.tsf is None:
            raise TerminalError(f"{name}: {entity} has no modification time to read incrementally; use mode: full")
        if entity == "smart_process" and entity_type_id is None:
            raise TerminalError(f"{name}: smart_process needs entity_type_id")
        if entity == "list_element" and iblock_id is None and not iblock_code:
            raise TerminalError(f"{name}: list_element needs iblock_id or iblock_code")
        self.entity, self.mode, self.name = entity, mode, name
        self._factory = client_factory
        self._client = None
        sel = list(select or default)
        if self.idf not in sel:
            sel.insert(0, self.idf)
        if mode == "incremental" and self.tsf not in sel:  # the cursor needs it; full mode reads what is asked
            sel.append(self.tsf)
        self.select = sel
        self.base: dict[str, Any] = {}
        self.lists = entity == "list_element"
        if entity == "smart_process":
            self.base["entityTypeId"] = entity_type_id
        if self.lists:
            self.base["IBLOCK_TYPE_ID"] = iblock_type
            self.base["IBLOCK_ID" if iblock_id is not None else "IBLOCK_CODE"] = \
                iblock_id if iblock_id is not None else iblock_code
        self.filter = dict(filter or {})
        self.schema = pa.schema([(c, pa.string()) for c in self.select])
        self.requests = 0
        self._served: datetime | None = None  # the portal's time when it answered the last page

    # ------------------------------------------------------------------ contract
    @property
    def client(self):
        if self._client is None:
            self._client = self._factory()
        return self._client

    def columns(self) -> list[str]:
        return list(self.select)

    def check(self) -> None:
        try:
            self._page({}, {self.idf: "ASC"}, select=[self.idf])
        except ConnectorError as e:
            raise TerminalError(f"{self.name}: cannot read {self.method}: {e}") from e

    def next_pass(self, finished: dict | None) -> dict | None:
        if self.mode == "incremental" and finished:
            return {"mode": "incremental", "last_id": finished.get("last_id"), "watermark": finished.get("watermark")}
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        cur = dict(cursor or {})
        if cur.get("mode") not in (None, self.mode):
            cur = {}  # a cursor of the other mode: start over
        state = {"mode": self.mode, "last_id": cur.get("last_id"), "watermark": cur.get("watermark")}
        pages = self._full(state) if self.mode == "full" else self._incremental(state)
        rows: list[dict] = []
        done = 0
        for page in pages:
            rows += page
            if len(rows) >= batch_size:
                done += len(rows)
                yield SourceBatch(self._table(rows), self._safe(state), progress=done)
                rows = []
        if rows:
            done += len(rows)
            yield SourceBatch(self._table(rows), self._safe(state), progress=done)

    @property
    def retries_dead_letters(self) -> bool:  # type: ignore[override]
        return self.mode == "incremental"

    def read_keys(self, columns: list[str], source_ids: list[str], batch_size: int) -> Iterator[SourceBatch]:
        """The records with these ids, as the portal has them now (only when the pipeline's key is the id)."""
        if list(columns) != [self.idf]:
            return
        ids = sorted({_id(s) for s in source_ids if str(s).strip().isdigit()})
        rows: list[dict] = []
        for i in range(0, len(ids), PAGE):
            rows += self._page({"@" + self.idf: ids[i:i + PAGE]}, {self.idf: "ASC"})
            if len(rows) >= batch_size:
                yield SourceBatch(self._table(rows), {})
                rows = []
        if rows:
            yield SourceBatch(self._table(rows), {})

    def _safe(self, state: dict) -> dict:
        """The cursor to keep. In incremental mode, while the watermark's second was still running on the portal
        when it was read (its answer's ``time.date_start`` not past it), a record changed later in that same second
        gets the same timestamp and may have a lower id: then the id tie-break is dropped and the next read takes
        that whole second again (a few rows read twice, which the engine sees as unchanged; none lost)."""
        out = dict(state)
        if self.mode == "incremental" and out.get("watermark"):
            wm = _ts(out["watermark"])
            if self._served is None or wm is None or self._served <= wm:
                out["last_id"] = None
        return out

    # ------------------------------------------------------------------ paging
    def _page(self, flt: dict, order: dict, select: list[str] | None = None) -> list[dict]:
        p = dict(self.base)
        f = {**self.filter, **flt}
        if self.lists:
            p.update({"SELECT": select or self.select, "FILTER": f, "ELEMENT_ORDER": order})
        else:
            p.update({"select": select or self.select, "filter": f, "order": order})
        p["start"] = -1
        ans = self.client.call(self.method, p, write=False)
        self.requests += 1
        self._served = _ts((ans.time or {}).get("date_start"))
        rows = ans.result
        if isinstance(rows, dict) and "items" in rows:
            rows = rows["items"]
        if isinstance(rows, dict):
            rows = list(rows.values())
        return [r for r in (rows or []) if isinstance(r, dict)]

    def _full(self, state: dict) -> Iterator[list[dict]]:
        while True:
            flt = {">" + self.idf: state["last_id"]} if state["last_id"] is not None else {}
            rows = self._page(flt, {self.idf: "ASC"})
            if rows:
                state["last_id"] = _id(rows[-1][self.idf])
                if self.tsf:
                    best = max((r.get(self.tsf) for r in rows if _ts(r.get(self.tsf))), key=_ts, default=None)
                    if best and (state["watermark"] is None or _ts(best) > _ts(state["watermark"])):
                        state["watermark"] = best
                yield rows
            if len(rows) < PAGE:
                return

    def _incremental(self, state: dict) -> Iterator[list[dict]]:
        idf, tsf = self.idf, self.tsf
        phase = "ge"  # ge: >= watermark, skipping what was read on its second; eq: the rest of that second by id
        while True:
            wm, last = state["watermark"], state["last_id"]
            if phase == "eq":
                rows = self._page({"=" + tsf: wm, ">" + idf: last if last is not None else 0}, {idf: "ASC"})
                if rows:
                    state["last_id"] = _id(rows[-1][idf])
                    yield rows
                if len(rows) < PAGE:
                    phase = "gt"
                continue
            flt = {} if wm is None else {(">=" if phase == "ge" else ">") + tsf: wm}
            rows = self._page(flt, {tsf: "ASC", idf: "ASC"})
            wm_t = _ts(wm)
            kept = [r for r in rows
                    if not (wm_t is not None and _ts(r.get(tsf)) == wm_t and last is not None and _id(r[idf]) <= last)]
            if kept:
                state["watermark"], state["last_id"] = kept[-1][tsf], _id(kept[-1][idf])
                yield kept
            if len(rows) < PAGE:
                return
            top = _ts(state["watermark"])
            phase = "eq" if all(_ts(r.get(tsf)) == top for r in rows) else "ge"

    def _table(self, rows: list[dict]) -> pa.Table:
        cols = {c: [_text(r.get(c)) for r in rows] for c in self.select}
        return pa.table(cols, schema=self.schema)


__all__ = ["PortalSource", "ENTITIES", "MODES"]
