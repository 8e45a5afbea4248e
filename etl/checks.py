"""Checks of a loaded project that need more than one file: mappings against schemas, links against pipelines,
stages against the registry, and (for `etl validate`) the columns the sources really have."""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from schemas import get_entity

if TYPE_CHECKING:
    from etl.config import ConfigIssue, Pipeline, Project


def check_semantics(project: "Project") -> list["ConfigIssue"]:
    from etl.config import ConfigIssue, FieldSpec, suggest
    from etl.stages import STAGES

    issues: list[ConfigIssue] = []
    order = project.order
    for pname in order:
        p = project.pipelines.get(pname)
        if p is None:
            continue
        doc, cfg = p.doc, p.config
        entity = get_entity(cfg.entity)
        for target, spec in cfg.mapping.items():
            path = ("mapping", target)
            if target not in entity.by_name:
                hint = ""
                if entity.link(target):
                    hint = f" ({target!r} is a link: declare it under `links:`)"
                issues.append(ConfigIssue(doc.file, doc.line(path), f"mapping.{target}",
                                          f"unknown field {target!r} of entity {entity.name}{hint}",
                                          None if hint else suggest(target, entity.field_names)))
            if isinstance(spec, FieldSpec):
                given = [k for k in ("column", "const", "concat", "template", "cases") if getattr(spec, k) is not None]
                if len(given) != 1:
                    issues.append(ConfigIssue(doc.file, doc.line(path), f"mapping.{target}",
                                              "give exactly one of column, const, concat, template, cases"
                                              + (f" (got {', '.join(given)})" if given else "")))
                if spec.map is not None and spec.column is None and spec.cases is None and spec.lookup is None:
                    issues.append(ConfigIssue(doc.file, doc.line(path), f"mapping.{target}.map",
                                              "a value map needs `column` (or `cases`, `lookup`)"))
                issues += _constructor_issues(project, doc, target, spec)
        for req in entity.required:
            if req not in cfg.mapping:
                issues.append(ConfigIssue(doc.file, doc.line(("mapping",)), "mapping",
                                          f"required field {req!r} of entity {entity.name} is not mapped"))
        for lname, link in cfg.links.items():
            path = ("links", lname)
            decl = entity.link(lname)
            if decl is None:
                issues.append(ConfigIssue(doc.file, doc.line(path), f"links.{lname}",
                                          f"entity {entity.name} has no link {lname!r}",
                                          suggest(lname, [l.name for l in entity.links])))
                continue
            other = project.pipelines.get(link.pipeline)
            if link.pipeline not in order:
                issues.append(ConfigIssue(doc.file, doc.line(path + ("pipeline",)), f"links.{lname}.pipeline",
                                          f"unknown pipeline {link.pipeline!r}", suggest(link.pipeline, order)))
            elif order.index(link.pipeline) >= order.index(pname):
                issues.append(ConfigIssue(doc.file, doc.line(path + ("pipeline",)), f"links.{lname}.pipeline",
                                          f"pipeline {link.pipeline!r} must come before {pname!r} in pipelines.yaml "
                                          "(links are resolved through what is already loaded)"))
            elif other is not None and other.config.entity != decl.entity:
                issues.append(ConfigIssue(doc.file, doc.line(path + ("pipeline",)), f"links.{lname}.pipeline",
                                          f"link {lname!r} points to a {decl.entity}, but pipeline {link.pipeline!r} "
                                          f"loads {other.config.entity} records"))
        for i, st in enumerate(cfg.stages):
            if st.type not in STAGES:
                issues.append(ConfigIssue(doc.file, doc.line(("stages", i, "type")), f"stages[{i}].type",
                                          f"unknown stage {st.type!r}", suggest(st.type, STAGES)))
            else:
                err = STAGES[st.type].check_options(st.model_extra or {})
                if err:
                    issues.append(ConfigIssue(doc.file, doc.line(("stages", i)), f"stages[{i}]", err))
        if cfg.dedupe is not None:
            issues += _dedupe_issues(doc, cfg.dedupe, entity)
        issues += _target_option_issues(project, p)
    return issues


def _dedupe_issues(doc, spec, entity) -> list["ConfigIssue"]:
    from etl.config import ConfigIssue, suggest

    out = []
    fields = entity.field_names + [l.id_field for l in entity.links]
    if not spec.match or any(not rule for rule in spec.match):
        out.append(ConfigIssue(doc.file, doc.line(("dedupe", "match")), "dedupe.match",
                               "give at least one rule, each a field or a list of fields (e.g. [[phone], [email]])"))
    for i, rule in enumerate(spec.match):
        for j, f in enumerate(rule):
            if f not in fields:
                out.append(ConfigIssue(doc.file, doc.line(("dedupe", "match", i)), f"dedupe.match[{i}][{j}]",
                                       f"unknown field {f!r} of entity {entity.name}", suggest(f, fields)))
    for j, f in enumerate(spec.distinct_by):
        if f not in fields:
            out.append(ConfigIssue(doc.file, doc.line(("dedupe", "distinct_by", j)), f"dedupe.distinct_by[{j}]",
                                   f"unknown field {f!r} of entity {entity.name}", suggest(f, fields)))
    if spec.policy == "newest" and not spec.newest_by:
        out.append(ConfigIssue(doc.file, doc.line(("dedupe", "policy")), "dedupe.newest_by",
                               "policy `newest` needs `newest_by`: the field that dates a record (e.g. modified_at)"))
    if spec.newest_by and spec.newest_by not in fields:
        out.append(ConfigIssue(doc.file, doc.line(("dedupe", "newest_by")), "dedupe.newest_by",
                               f"unknown field {spec.newest_by!r} of entity {entity.name}",
                               suggest(spec.newest_by, fields)))
    return out


_DATE_DIRECTIVES = set("aAbBcdHIjmMpSUwWxXyYzZ%")


def _constructor_issues(project: "Project", doc, target: str, spec) -> list["ConfigIssue"]:
    """`date`, `number`, `lookup` and `cases` of one mapped field: combinations, formats, the lookup file."""
    from etl.config import ConfigIssue, dotted, suggest

    out: list[ConfigIssue] = []
    base = ("mapping", target)

    def issue(keys: tuple, message: str, hint: str | None = None) -> None:
        line = doc.line(base + keys) or doc.line(base)
        out.append(ConfigIssue(doc.file, line, dotted(base + keys), message, hint))

    if spec.date is not None and spec.number is not None:
        issue(("date",), "give at most one of date, number")
    if (spec.date is not None or spec.number is not None) and spec.const is not None:
        issue(("date",) if spec.date is not None else ("number",), "a date/number format needs a column, not `const`")
    if spec.date is not None:
        if not spec.date.format:
            issue(("date", "format"), "give at least one date format")
        for i, fmt in enumerate(spec.date.format):
            directives = re.findall(r"%(.?)", fmt)
            unknown = [d for d in directives if d not in _DATE_DIRECTIVES]
            if unknown:
                issue(("date", "format") + ((i,) if len(spec.date.format) > 1 else ()),
                      f"bad date format {fmt!r}: unknown directive %{unknown[0]}")
            elif not [d for d in directives if d != "%"]:
                issue(("date", "format") + ((i,) if len(spec.date.format) > 1 else ()),
                      f"bad date format {fmt!r}: no directive such as %d, %m, %Y")
    if spec.number is not None:
        dec, th = spec.number.decimal, spec.number.thousands
        if len(dec) != 1 or dec.isdigit() or dec in "+-":
            issue(("number", "decimal"), f"bad decimal mark {dec!r}: give one character such as ',' or '.'")
        if th is not None and (len(th) != 1 or th.isdigit() or th in "+-"):
            issue(("number", "thousands"), f"bad thousands separator {th!r}: give one character such as ' '")
        elif th is not None and th == dec:
            issue(("number", "thousands"), f"the thousands separator {th!r} is the decimal mark too")
    if spec.lookup is not None:
        lk = spec.lookup
        path = project.path(lk.file)
        if not path.is_file():
            issue(("lookup", "file"), f"lookup file {lk.file!r} not found (looked at {str(path)!r})")
        else:
            from connectors.base import ConnectorError
            from connectors.onec.flat import read_header

            try:
                header = read_header(path, lk.encoding, lk.delimiter)
            except (ConnectorError, OSError, LookupError) as e:
                issue(("lookup", "file"), f"cannot read lookup file {lk.file!r}: {e}")
            else:
                for k in ("key", "value"):
                    col = getattr(lk, k)
                    if col not in header:
                        issue(("lookup", k), f"lookup file {lk.file!r} has no column {col!r}", suggest(col, header))
    for i, case in enumerate(spec.cases or []):
        given = [k for k in ("column", "const", "template") if getattr(case, k) is not None]
        if len(given) != 1:
            issue(("cases", i), "give exactly one of column, const, template in each case"
                  + (f" (got {', '.join(given)})" if given else ""))
        w = case.when
        if all(getattr(w, k) is None for k in ("equals", "not_equals", "in_", "not_in", "not_empty", "matches")):
            issue(("cases", i, "when"), "a condition needs one of equals, not_equals, in, not_in, not_empty, matches")
        if w.matches is not None:
            import pyarrow as pa
            import pyarrow.compute as pc

            try:  # the pattern is run by Arrow (RE2 syntax)
                pc.match_substring_regex(pa.array([""]), w.matches)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                issue(("cases", i, "when", "matches"), f"bad regular expression {w.matches!r}: {e}")
    if spec.cases is not None and not spec.cases:
        issue(("cases",), "give at least one case")
    return out


def _target_option_issues(project: "Project", p: "Pipeline") -> list["ConfigIssue"]:
    """`target_options:` checked by the pipeline's target kind (etl.factory.check_target_options)."""
    from etl.config import ConfigIssue
    from etl.factory import check_target_options

    out = []
    for path, msg in check_target_options(project, p):
        keys = ("target_options", *[int(k) if k.isdigit() else k for k in path.split(".") if k])
        line = p.doc.line(keys) or p.doc.line(keys[:-1]) or p.doc.line(("target_options",))
        out.append(ConfigIssue(p.doc.file, line, ".".join(("target_options", path)) if path else "target_options",
                               msg))
    return out


def columns_used(p: "Pipeline") -> dict[tuple, str]:
    """Every source column a pipeline refers to, by the key path that refers to it."""
    cfg = p.config
    used: dict[tuple, str] = {}
    for i, k in enumerate(cfg.key):
        used[("key", i)] = k
    for i, rule in enumerate(cfg.filter):
        used[("filter", i, "column")] = rule.column
    for target, spec in cfg.mapping.items():
        if isinstance(spec, str):
            used[("mapping", target)] = spec
        else:
            if spec.column:
                used[("mapping", target, "column")] = spec.column
            for j, c in enumerate(spec.concat or []):
                used[("mapping", target, "concat", j)] = c
            if spec.template:
                for _, fname, _, _ in string.Formatter().parse(spec.template):
                    if fname:
                        used[("mapping", target, "template", fname)] = fname
            for j, case in enumerate(spec.cases or []):
                used[("mapping", target, "cases", j, "when", "column")] = case.when.column
                if case.column:
                    used[("mapping", target, "cases", j, "column")] = case.column
                for _, fname, _, _ in string.Formatter().parse(case.template or ""):
                    if fname:
                        used[("mapping", target, "cases", j, "template", fname)] = fname
    for lname, link in cfg.links.items():
        used[("links", lname, "column")] = link.column
    for i, st in enumerate(cfg.stages):
        for j, c in enumerate((st.model_extra or {}).get("columns", []) or []):
            used[("stages", i, "columns", j)] = c
        single = (st.model_extra or {}).get("column")
        if isinstance(single, str):
            used[("stages", i, "column")] = single
    return used


def stage_outputs(p: "Pipeline") -> set[str]:
    """Columns the pipeline's stages add to the batch (a stage class may declare them with output_columns)."""
    from etl.stages import STAGES

    out: set[str] = set()
    for st in p.config.stages:
        declare = getattr(STAGES.get(st.type), "output_columns", None)
        if declare is not None:
            try:
                out.update(c for c in declare(dict(st.model_extra or {})) if isinstance(c, str))
            except Exception:  # noqa: BLE001 - bad options are reported by check_options
                pass
    return out


def check_columns(p: "Pipeline", columns: list[str]) -> list["ConfigIssue"]:
    """Each column the pipeline refers to must be one the source yields."""
    from etl.config import ConfigIssue, suggest, dotted

    have = set(columns) | stage_outputs(p)
    out = []
    for path, col in columns_used(p).items():
        if col not in have:
            out.append(ConfigIssue(p.doc.file, p.doc.line(path), dotted(path),
                                   f"source has no column {col!r}", suggest(col, columns)))
    for col in getattr(p.source, "types", None) or {}:
        if col not in have:
            out.append(ConfigIssue(p.doc.file, p.doc.line(("source", "types", col)), f"source.types.{col}",
                                   f"source has no column {col!r}", suggest(col, columns)))
    return out
