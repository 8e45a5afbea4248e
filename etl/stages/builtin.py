"""General-purpose stages: required columns, regex replacement, case."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl.stages.base import Stage, StageResult, no_rejects, rejects_where


def _columns(options: dict[str, Any]) -> str | None:
    cols = options.get("columns")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
        return "`columns:` must be a non-empty list of column names"
    return None


class Required(Stage):
    """Reject a record whose listed columns are empty: `{type: required, columns: [ИНН]}`."""

    type = "required"

    @classmethod
    def check_options(cls, options):
        extra = set(options) - {"columns"}
        return _columns(options) or (f"unknown option(s) {', '.join(sorted(extra))}" if extra else None)

    def process(self, table: pa.Table) -> StageResult:
        rejects = []
        for col in self.options["columns"]:
            arr = table.column(col)
            empty = pc.is_null(arr) if not pa.types.is_string(arr.type) else pc.or_kleene(pc.is_null(arr), pc.equal(arr, ""))
            res = rejects_where(table, empty, "missing_value", col, "column «{field}» is empty")
            table = res.kept
            rejects.append(res.rejects)
        return StageResult(table, pa.concat_tables(rejects) if rejects else no_rejects())


class Replace(Stage):
    """Regex replacement in text columns: `{type: replace, columns: [Телефон], pattern: '[^0-9+]', with: ''}`."""

    type = "replace"

    @classmethod
    def check_options(cls, options):
        err = _columns(options)
        if err:
            return err
        if not isinstance(options.get("pattern"), str):
            return "`pattern:` (a regular expression) is required"
        try:
            re.compile(options["pattern"])
        except re.error as e:
            return f"bad pattern: {e}"
        extra = set(options) - {"columns", "pattern", "with"}
        return f"unknown option(s) {', '.join(sorted(extra))}" if extra else None

    def process(self, table: pa.Table) -> StageResult:
        for col in self.options["columns"]:
            i = table.column_names.index(col)
            new = pc.replace_substring_regex(table.column(col), self.options["pattern"], str(self.options.get("with", "")))
            table = table.set_column(i, col, new)
        return StageResult(table, no_rejects())


class Case(Stage):
    """Change case of text columns: `{type: case, columns: [Email], to: lower|upper|title}`."""

    type = "case"
    _FUNCS = {"lower": pc.utf8_lower, "upper": pc.utf8_upper, "title": pc.utf8_title}

    @classmethod
    def check_options(cls, options):
        err = _columns(options)
        if err:
            return err
        if options.get("to") not in cls._FUNCS:
            return "`to:` must be one of lower, upper, title"
        return None

    def process(self, table: pa.Table) -> StageResult:
        fn = self._FUNCS[self.options["to"]]
        for col in self.options["columns"]:
            i = table.column_names.index(col)
            table = table.set_column(i, col, fn(table.column(col)))
        return StageResult(table, no_rejects())
