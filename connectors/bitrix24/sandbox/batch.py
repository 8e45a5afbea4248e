"""``batch``: up to 50 commands in one request (one request for the leaky bucket), run in key order, each in its
own transaction (a batch is partially committed); ``halt`` stops at the first failure; later commands may use
``$result[<cmd>][<field>]..`` (a reference to a failed command or a missing path stays literal text). The answer has
all five sections, written as PHP writes arrays (``[]`` when empty, a list for keys 0..n-1) (reference section 3).

Choices where the reference leaves it open: more than 50 commands is a whole-request 400 ERROR_BATCH_LENGTH_EXCEEDED
(open question 4); a nested ``batch`` gets ERROR_BATCH_METHOD_NOT_ALLOWED in ``result_error``; only ``$result[..]``
is substituted (open question 9).
"""

from __future__ import annotations

import re
import time
from typing import Any

from . import envelope
from .envelope import ApiError, Result, php_array
from .faults import CMD_ERROR
from .methods import REGISTRY, Call, method
from .params import as_map, get, parse_query, to_bool

MAX_COMMANDS = 50
_REF = re.compile(r"\$result\[([^\]\[]*)\]((?:\[[^\]\[]*\])*)")
_SEG = re.compile(r"\[([^\]\[]*)\]")
_UNRESOLVED = object()


def _walk(value: Any, path: list[str]) -> Any:
    for seg in path:
        if isinstance(value, dict):
            if seg not in value:
                return _UNRESOLVED
            value = value[seg]
        elif isinstance(value, list):
            if not seg.lstrip("-").isdigit() or not -len(value) <= int(seg) < len(value):
                return _UNRESOLVED
            value = value[int(seg)]
        else:
            return _UNRESOLVED
    return value


def _text(v: Any) -> str:
    if v is True:
        return "1"
    if v is False or v is None:
        return ""
    return str(v)


def substitute(params: Any, results: dict) -> Any:
    """Replace ``$result[cmd][a][0]..`` in every string value by what the earlier command returned."""
    if isinstance(params, dict):
        return {k: substitute(v, results) for k, v in params.items()}
    if isinstance(params, list):
        return [substitute(v, results) for v in params]
    if not isinstance(params, str) or "$result[" not in params:
        return params

    def resolve(m: re.Match) -> Any:
        name = m.group(1)
        if name not in results:
            return _UNRESOLVED
        return _walk(results[name], _SEG.findall(m.group(2)))

    whole = _REF.fullmatch(params)
    if whole:
        v = resolve(whole)
        return params if v is _UNRESOLVED else v

    def repl(m: re.Match) -> str:
        v = resolve(m)
        if v is _UNRESOLVED or isinstance(v, (dict, list)):
            return m.group(0)
        return _text(v)

    return _REF.sub(repl, params)


@method("batch", tx=False, batch=False)
def batch(call: Call, p: dict):
    sb = call.sandbox
    cmds = as_map(get(p, "cmd")) or {}
    if len(cmds) > MAX_COMMANDS:
        raise envelope.batch_length_exceeded()
    halt = to_bool(get(p, "halt"), False)
    billing_batch = sb.batch_billing == "batch"
    results: dict[str, Any] = {}
    errors: dict[str, dict] = {}
    totals: dict[str, int] = {}
    nexts: dict[str, int] = {}
    times: dict[str, dict] = {}
    batch_cost = 0.0
    for key, value in cmds.items():
        key = str(key)
        started = time.time()
        err: ApiError | None = None
        outcome = None
        if not isinstance(value, str):
            err = ApiError("ERROR_ARGUMENT", "The command must be a string: method?parameters", 400)
            name = "?"
        else:
            name, _, query = value.partition("?")
            name = name.strip().lower()
            for suffix in (".json", ".xml"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
            params = substitute(parse_query(query), results)
            if isinstance(params, dict):
                params.pop("auth", None)
            spec = REGISTRY.get(name)
            if spec is None:
                err = envelope.method_not_found(name)
            elif not spec.batch:
                err = envelope.batch_method_not_allowed()
            elif sb.faults.command_fault():
                sb.stats.fault("cmd_error")
                err = ApiError(*CMD_ERROR, 400)
            elif not billing_batch and not sb.budget.allowed((call.cred, name)):
                err = envelope.operation_time_limit()
            else:
                outcome = sb.run_command(name, params, call.user_id, call.cred, nested=True,
                                         bill=not billing_batch)
                err = outcome.error
                batch_cost += outcome.billed
        finished = time.time()
        sb.stats.command(name, err)
        if outcome is not None:
            started, finished = outcome.started, outcome.finished
        if billing_batch:
            op = None
        else:
            op = sb.budget.status((call.cred, name)) if sb.budget.enabled else None
        times[key] = envelope.time_block(started, finished, outcome.processing if outcome else finished - started,
                                         *(op if op else (None, None)))
        if err is not None:
            errors[key] = err.body()
            if halt:
                break
            continue
        res = outcome.result
        if isinstance(res, Result):
            results[key] = res.result
            if res.total is not None:
                totals[key] = res.total
            if res.next is not None:
                nexts[key] = res.next
        else:
            results[key] = res
        if results[key] == {}:
            results[key] = []
    if billing_batch and sb.budget.enabled:
        operating, reset_at = sb.budget.bill((call.cred, "batch"), batch_cost)
        for t in times.values():
            t["operating_reset_at"], t["operating"] = reset_at, round(operating, 6)
    return {"result": php_array(results), "result_error": php_array(errors), "result_total": php_array(totals),
            "result_next": php_array(nexts), "result_time": php_array(times)}
