"""Addresses through DaData's clean API: standardised address, its parts, FIAS id, coordinates and quality codes.

```yaml
stages:
  - type: dadata_address
    column: Адрес                  # the address as typed
    into:                          # what to write and where (default: every field below as dadata_<field>)
      address: Адрес_Стандарт      # DaData's `result`
      region: Регион               # region_with_type ("Свердловская обл", "г Москва")
      city: Город                  # city, else settlement
      street: Улица                # street_with_type ("ул Ленина")
      house: Дом                   # house (+ block: "5 к 2")
      flat: Квартира
      postal_code: Индекс
      fias_id: ФИАС
      geo_lat: Широта              # float
      geo_lon: Долгота             # float
      qc: qc                       # int
      qc_geo: qc_geo               # int
      # any other field of DaData's answer by its own name: timezone, okato, qc_complete, beltway_hit, ...
    status_column: dadata_status   # ok | review | not_cleaned | empty
    qc_policy: {accept: [0], review: [1, 3], reject: [2]}            # the default
    qc_geo_policy: {accept: [0, 1], review: [2, 3, 4], reject: [5]}  # optional (default: none)
    budget: 1000                   # paid requests this run, at most (also capped by dadata.max_requests_per_run)
    on_budget: keep                # keep: the rest stay uncleaned (status not_cleaned); reject: reason dadata_budget
    on_empty: keep                 # keep (status empty) | reject (reason dadata_empty); empty ones are never sent
```

Per batch: the addresses are normalised (vectorised) into cache keys; the distinct keys are looked up in the
state store's cache (``etl_dadata_cache``); only distinct misses are sent, within the budget, each once; the answers
are stored before anything else happens (they are paid for), then mapped back onto every row. The worst verdict of
the two policies wins: reject (reason ``dadata_qc`` / ``dadata_qc_geo``) > review > accept; a code no list names is
reviewed. A dry run sends nothing: cached answers are used, the rest stay uncleaned, and the stage reports how many
requests a real run would send.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import TerminalError
from etl import secrets
from etl.stages.base import ROW, STAGE_REJECT_SCHEMA, Stage, StageResult, no_rejects

# logical outputs: name -> arrow type
OUTPUTS: dict[str, pa.DataType] = {
    "address": pa.string(), "region": pa.string(), "city": pa.string(), "street": pa.string(),
    "house": pa.string(), "flat": pa.string(), "postal_code": pa.string(), "fias_id": pa.string(),
    "geo_lat": pa.float64(), "geo_lon": pa.float64(), "qc": pa.int64(), "qc_geo": pa.int64(),
}
_INT_FIELDS = {"qc", "qc_geo", "qc_complete", "qc_house"}
DEFAULT_QC_POLICY = {"accept": [0], "review": [1, 3], "reject": [2]}
_VERDICTS = ("accept", "review", "reject")
_OPTIONS = {"column", "into", "prefix", "status_column", "qc_policy", "qc_geo_policy", "budget", "on_budget",
            "on_empty"}

OK, REVIEW, NOT_CLEANED, EMPTY = "ok", "review", "not_cleaned", "empty"
MEMO_SIZE = 50_000


def _num(v: Any, typ: type) -> Any:
    """qc codes come as ints or strings ("qc": "0"), coordinates as strings: read both (as connectors.dadata)."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return int(float(v)) if typ is int else float(v)
    except (TypeError, ValueError):
        return None


def _value(answer: dict, name: str) -> Any:
    """One output value from DaData's answer."""
    if name == "address":
        return answer.get("result")
    if name == "region":
        return answer.get("region_with_type")
    if name == "city":
        return answer.get("city") or answer.get("settlement")
    if name == "street":
        return answer.get("street_with_type")
    if name == "house":
        house = answer.get("house")
        if house and answer.get("block"):
            house = f"{house} {answer.get('block_type') or ''} {answer['block']}".replace("  ", " ")
        return house
    if name in ("geo_lat", "geo_lon"):
        return _num(answer.get(name), float)
    if name in _INT_FIELDS:
        return _num(answer.get(name), int)
    v = answer.get(name)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return None if v is None else str(v)


def _check_policy(name: str, policy: Any, codes: range) -> str | None:
    if policy is None:
        return None
    if not isinstance(policy, dict):
        return f"`{name}:` must be a mapping of accept/review/reject to lists of codes"
    extra = set(policy) - set(_VERDICTS)
    if extra:
        return f"`{name}:` unknown key(s) {', '.join(sorted(map(str, extra)))} (valid: accept, review, reject)"
    seen: dict[int, str] = {}
    for verdict, vals in policy.items():
        if not isinstance(vals, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return f"`{name}.{verdict}` must be a list of integer codes"
        for v in vals:
            if v not in codes:
                return f"`{name}.{verdict}`: {v} is not a DaData code ({codes.start}..{codes.stop - 1})"
            if v in seen:
                return f"`{name}`: code {v} is under both {seen[v]} and {verdict}"
            seen[v] = verdict
    return None


def _verdict(policy: dict | None, code: int | None) -> str:
    if policy is None:
        return "accept"
    for verdict in ("reject", "review", "accept"):
        if code is not None and code in (policy.get(verdict) or []):
            return verdict
    return "review"  # a code no list names (or none at all) is looked at by a person


class DadataAddress(Stage):
    """Clean and geocode an address column through DaData, with a persistent cache and a per-run budget."""

    type = "dadata_address"

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        from connectors.dadata import ADDRESS_FIELDS
        from etl.config import suggest

        extra = set(options) - _OPTIONS
        if extra:
            first = sorted(extra)[0]
            hint = suggest(first, _OPTIONS)
            return (f"unknown option {first!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; valid: {', '.join(sorted(_OPTIONS))}")
        col = options.get("column")
        if not isinstance(col, str) or not col:
            return "`column:` (the column holding the address) is required"
        into = options.get("into")
        if into is not None:
            if not isinstance(into, dict) or not into:
                return "`into:` must map DaData fields (address, region, city, ...) to column names"
            valid = set(OUTPUTS) | set(ADDRESS_FIELDS)
            for k, v in into.items():
                if k not in valid:
                    hint = suggest(str(k), valid)
                    return f"`into.{k}`: not a DaData field" + (f" (did you mean {hint!r}?)" if hint else "") \
                        + f"; fields: {', '.join(OUTPUTS)} or any field of DaData's answer"
                if not isinstance(v, str) or not v:
                    return f"`into.{k}` must be a column name"
            if len(set(into.values())) != len(into):
                return "`into:` writes two fields into the same column"
        for key in ("prefix", "status_column"):
            if key in options and (not isinstance(options[key], str) or not options[key]):
                return f"`{key}:` must be a non-empty text"
        err = _check_policy("qc_policy", options.get("qc_policy"), range(0, 4)) or \
            _check_policy("qc_geo_policy", options.get("qc_geo_policy"), range(0, 7))
        if err:
            return err
        budget = options.get("budget")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 0):
            return "`budget:` must be a whole number of paid requests (0 or more)"
        for key in ("on_budget", "on_empty"):
            if key in options and options[key] not in ("keep", "reject"):
                return f"`{key}:` must be keep or reject (got {options[key]!r})"
        return None

    @classmethod
    def output_columns(cls, options: dict[str, Any]) -> list[str]:
        """The columns this stage adds to a batch (for `etl validate`: a mapping may name them)."""
        prefix = options.get("prefix", "dadata_")
        into = options.get("into") or {k: prefix + k for k in OUTPUTS}
        return [*into.values(), options.get("status_column", "dadata_status")]

    def __init__(self, options, context=None):
        super().__init__(options, context)
        o = self.options
        self.column: str = o["column"]
        prefix = o.get("prefix", "dadata_")
        self.into: dict[str, str] = dict(o["into"]) if o.get("into") else {k: prefix + k for k in OUTPUTS}
        self.status_column: str = o.get("status_column", "dadata_status")
        self.qc_policy: dict = o.get("qc_policy") or DEFAULT_QC_POLICY
        self.qc_geo_policy: dict | None = o.get("qc_geo_policy")
        self.on_budget: str = o.get("on_budget", "keep")
        self.on_empty: str = o.get("on_empty", "keep")
        dcfg = getattr(self.context.settings, "dadata", None)
        caps = [b for b in (o.get("budget"), getattr(dcfg, "max_requests_per_run", None)) if b is not None]
        self.budget: int | None = min(caps) if caps else None
        self.dry_run = bool(self.context.dry_run)
        self._client = None
        self._cache = None
        self.stats = {"rows": 0, "distinct": 0, "cached": 0, "sent": 0, "paid": 0, "would_send": 0,
                      "over_budget": 0, "refused": 0, "empty": 0, "review": 0, "rejected": 0}
        self._planned = 0  # dry run: requests a real run would have spent so far
        # answers already read in this run, digested (output values, qc, qc_geo, result): a key seen in an
        # earlier batch costs neither a cache query nor a JSON decode; bounded (cleared past MEMO_SIZE keys)
        self._memo: dict[str, tuple] = {}

    # ------------------------------------------------------------ resources
    @property
    def cache(self):
        if self._cache is None:
            from connectors.dadata import DadataCache

            engine = self.context.state_engine
            if engine is None:
                raise TerminalError("the dadata_address stage needs the state store (its cache lives there)")
            self._cache = DadataCache(engine, "address", create=not self.dry_run)
        return self._cache

    def _make_client(self):
        from connectors.dadata import DadataClient

        cfg = getattr(self.context.settings, "dadata", None)
        key = cfg.api_key.get_secret_value() if cfg is not None and cfg.api_key is not None else ""
        secret = cfg.secret.get_secret_value() if cfg is not None and cfg.secret is not None else ""
        if cfg is None or not key:
            raise TerminalError(
                f"pipeline {self.context.pipeline!r}: the dadata_address stage needs DaData's API key: add "
                "`dadata: {api_key: ${DADATA_API_KEY}, secret: ${DADATA_SECRET}}` to pipelines.yaml")
        secrets.register(key)
        secrets.register(secret)
        return DadataClient(key, secret or None, base_url=cfg.base_url, timeout=cfg.timeout,
                            requests_per_second=getattr(cfg, "requests_per_second", 20.0),
                            connections_per_minute=getattr(cfg, "connections_per_minute", 60),
                            workers=getattr(cfg, "workers", 4), retries=getattr(cfg, "retries", 5),
                            retry_wait=getattr(cfg, "retry_wait", 0.5))

    @property
    def remaining(self) -> int | None:
        if self.budget is None:
            return None
        spent = self._planned if self.dry_run else self.stats["paid"]
        return max(0, self.budget - spent)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        console = self.context.console
        s = self.stats
        if console is None or not s["rows"]:
            return
        budget = "no budget" if self.budget is None else f"budget {self.budget}"
        if self.dry_run:
            text = (f"{self.context.pipeline}: dadata_address ({self.column}): {s['distinct']} distinct addresses, "
                    f"{s['cached']} in the cache; dry run: would send {s['would_send']} request(s) ({budget})"
                    + (f", {s['over_budget']} over the budget" if s["over_budget"] else ""))
        else:
            text = (f"{self.context.pipeline}: dadata_address ({self.column}): {s['distinct']} distinct addresses, "
                    f"{s['cached']} from the cache, {s['sent']} sent, {s['paid']} paid ({budget})"
                    + (f", {s['over_budget']} not cleaned: budget spent" if s["over_budget"] else "")
                    + (f", {s['refused']} refused by DaData" if s["refused"] else ""))
        text += f"; {s['review']} row(s) for review, {s['rejected']} rejected"
        console.info(secrets.mask(text))

    # ------------------------------------------------------------ the batch
    def process(self, table: pa.Table) -> StageResult:
        from connectors.dadata import QC_GEO_MEANING, QC_MEANING, normalise

        if self.column not in table.column_names:
            raise TerminalError(f"pipeline {self.context.pipeline!r}: the dadata_address stage reads column "
                                f"«{self.column}», which the source does not have")
        n = table.num_rows
        self.stats["rows"] += n
        if n == 0:
            return StageResult(self._with_columns(table, [], pa.array([], pa.int32()), []), no_rejects())
        raw = table.column(self.column)
        keys = normalise(raw)
        # distinct keys in order of first appearance, each with the text of its first row (what is sent)
        ks = pd.Series(keys.to_pandas(), dtype=object)
        first = ks[ks.notna()].drop_duplicates()
        distinct: list[str] = first.tolist()
        raw_texts = pc.take(raw if pa.types.is_string(raw.type) else pc.cast(raw, pa.string()),
                            pa.array(first.index.to_numpy(), pa.int64())).to_pylist()
        sources = {k: " ".join(str(t).split()) for k, t in zip(distinct, raw_texts)}
        self.stats["distinct"] += len(distinct)

        memo = self._memo
        digests: dict[str, tuple] = {k: memo[k] for k in distinct if k in memo}
        answers = self.cache.get_many([k for k in distinct if k not in digests])
        self.stats["cached"] += len(answers) + len(digests)
        misses = [k for k in distinct if k not in digests and k not in answers]
        refused: dict[str, Any] = {}
        over: list[str] = []
        if misses:
            allowed = misses if self.remaining is None else misses[:self.remaining]
            over = misses[len(allowed):]
            if self.dry_run:
                self._planned += len(allowed)
                self.stats["would_send"] += len(allowed)
            elif allowed:
                got, refused = self._send({k: sources[k] for k in allowed})
                answers.update(got)
        self.stats["over_budget"] += len(over)
        self.stats["refused"] += len(refused)
        if len(memo) + len(answers) > MEMO_SIZE:
            memo.clear()
        for k, a in answers.items():
            digests[k] = memo[k] = (tuple(_value(a, name) for name in self.into), _value(a, "qc"),
                                    _value(a, "qc_geo"), a.get("result"))

        # per distinct key: the answer (or None) and the verdict
        over_set = set(over)
        answer_list: list[tuple | None] = []
        status: list[str] = []
        reject_reason: list[str | None] = []
        reject_msg: list[str | None] = []
        for k in distinct:
            d = digests.get(k)
            answer_list.append(d)
            if d is None:
                if k in refused:
                    reject_reason.append(refused[k].reason)
                    reject_msg.append(str(refused[k]))
                    status.append(NOT_CLEANED)
                elif k in over_set and self.on_budget == "reject":
                    reject_reason.append("dadata_budget")
                    reject_msg.append(f"the run's DaData budget ({self.budget} paid requests) is spent: "
                                      f"the address was not cleaned (it will be on a later run)")
                    status.append(NOT_CLEANED)
                else:
                    reject_reason.append(None)
                    reject_msg.append(None)
                    status.append(NOT_CLEANED)
                continue
            _, qc, qc_geo, result = d
            v_qc, v_geo = _verdict(self.qc_policy, qc), _verdict(self.qc_geo_policy, qc_geo)
            if "reject" in (v_qc, v_geo):
                if v_qc == "reject":
                    reject_reason.append("dadata_qc")
                    reject_msg.append(f"DaData qc={qc} ({QC_MEANING.get(qc, 'unknown code')}) is rejected by the "
                                      f"pipeline's qc_policy" + (f"; DaData read: {result}" if result else ""))
                else:
                    reject_reason.append("dadata_qc_geo")
                    reject_msg.append(f"DaData qc_geo={qc_geo} ({QC_GEO_MEANING.get(qc_geo, 'unknown code')}) is "
                                      f"rejected by the pipeline's qc_geo_policy; DaData read: {result}")
                status.append(REVIEW)
            else:
                reject_reason.append(None)
                reject_msg.append(None)
                status.append(REVIEW if "review" in (v_qc, v_geo) else OK)

        idx = pc.index_in(keys, value_set=pa.array(distinct, pa.string())) if distinct \
            else pa.nulls(n, pa.int32())
        table = self._with_columns(table, answer_list, idx, status)

        # rows whose key is rejected (and empty ones, when on_empty says so)
        bad_keys = [i for i, r in enumerate(reject_reason) if r is not None]
        mask = pc.is_in(idx, value_set=pa.array(bad_keys, pa.int32())) if bad_keys \
            else pa.chunked_array([pa.array([False] * n)])
        empty = pc.is_null(keys)
        n_empty = pc.sum(empty).as_py() or 0
        self.stats["empty"] += n_empty
        if self.on_empty == "reject":
            mask = pc.or_(mask, empty)
        mask = pc.fill_null(mask, False)
        rejected = table.filter(mask)
        kept = table.filter(pc.invert(mask))
        self.stats["review"] += pc.sum(pc.equal(kept.column(self.status_column), REVIEW)).as_py() or 0
        self.stats["rejected"] += rejected.num_rows
        if not rejected.num_rows:
            return StageResult(kept, no_rejects())
        r_idx = pc.filter(idx, mask).to_pylist()
        values = rejected.column(self.column)
        values = (values if pa.types.is_string(values.type) else pc.cast(values, pa.string())).to_pylist()
        reasons, messages = [], []
        for i, v in zip(r_idx, values):
            if i is None:
                reasons.append("dadata_empty")
                messages.append(f"column «{self.column}» is empty: no address to clean")
            else:
                reasons.append(reject_reason[i])
                messages.append(f"address {v!r} (column «{self.column}»): {reject_msg[i]}")
        rej = pa.table({ROW: rejected.column(ROW), "reason": reasons, "message": messages,
                        "field": [self.column] * rejected.num_rows, "value": values}, schema=STAGE_REJECT_SCHEMA)
        return StageResult(kept, rej)

    def _send(self, to_send: dict[str, str]) -> tuple[dict[str, dict], dict[str, Any]]:
        """Send the distinct misses; store every answer in the cache before anything can fail."""
        if self._client is None:
            self._client = self._make_client()
        by_source: dict[str, list[str]] = {}
        for k, s in to_send.items():
            by_source.setdefault(s, []).append(k)
        outcome = self._client.clean_addresses(list(by_source))
        got = {k: a for s, a in outcome.results.items() for k in by_source[s]}
        refused = {k: e for s, e in outcome.failed.items() for k in by_source[s]}
        self.stats["sent"] += len(outcome.results) + len(outcome.failed)
        self.stats["paid"] += len(outcome.results)
        if got:
            self.cache.put_many(got)
        if outcome.error is not None:
            raise outcome.error
        return got, refused

    def _with_columns(self, table: pa.Table, digests: list[tuple | None], idx, status: list[str]) -> pa.Table:
        """Write the output columns: the values per distinct key, taken onto the rows."""
        nothing = (None,) * len(self.into)
        by_field = list(zip(*[nothing if d is None else d[0] for d in digests])) if digests else []
        for i, (name, col) in enumerate(self.into.items()):
            typ = OUTPUTS.get(name, pa.int64() if name in _INT_FIELDS else pa.string())
            values = pc.take(pa.array(by_field[i], typ), idx) if digests else pa.nulls(table.num_rows, typ)
            table = _set(table, col, values)
        st = pc.take(pa.array(status, pa.string()), idx) if status else pa.nulls(table.num_rows, pa.string())
        st = pc.fill_null(st, EMPTY) if table.num_rows else st
        return _set(table, self.status_column, st)


def _set(table: pa.Table, name: str, values) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


__all__ = ["DadataAddress", "OUTPUTS", "DEFAULT_QC_POLICY"]
