"""Checks of a loaded project that need more than one file: mappings against schemas, links against pipelines,
stages against the registry, and (for `etl validate`) the columns the sources really have."""

from __future__ import annotations

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
                given = [k for k in ("column", "const", "concat", "template") if getattr(spec, k) is not None]
                if len(given) != 1:
                    issues.append(ConfigIssue(doc.file, doc.line(path), f"mapping.{target}",
                                              "give exactly one of column, const, concat, template"
                                              + (f" (got {', '.join(given)})" if given else "")))
                if spec.map is not None and spec.column is None:
                    issues.append(ConfigIssue(doc.file, doc.line(path), f"mapping.{target}.map",
                                              "a value map needs `column`"))
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
    return issues


def columns_used(p: "Pipeline") -> dict[tuple, str]:
    """Every source column a pipeline refers to, by the key path that refers to it."""
    from etl.config import FieldSpec

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
                        used[("mapping", target, "template")] = fname
    for lname, link in cfg.links.items():
        used[("links", lname, "column")] = link.column
    for i, st in enumerate(cfg.stages):
        for c in (st.model_extra or {}).get("columns", []) or []:
            used[("stages", i, "columns")] = c
    return used


def check_columns(p: "Pipeline", columns: list[str]) -> list["ConfigIssue"]:
    """Each column the pipeline refers to must be one the source yields."""
    from etl.config import ConfigIssue, suggest, dotted

    have = set(columns)
    out = []
    for path, col in columns_used(p).items():
        if col not in have:
            out.append(ConfigIssue(p.doc.file, p.doc.line(path), dotted(path),
                                   f"source has no column {col!r}", suggest(col, columns)))
    for col in p.source.types:
        if col not in have:
            out.append(ConfigIssue(p.doc.file, p.doc.line(("source", "types", col)), f"source.types.{col}",
                                   f"source has no column {col!r}", suggest(col, columns)))
    return out
