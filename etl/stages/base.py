"""The stage contract: a batch in, the batch it keeps and a table of rejects out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

ROW = "_row"  # the engine's row number within a batch; every stage keeps it

STAGE_REJECT_SCHEMA = pa.schema(
    [(ROW, pa.int64()), ("reason", pa.string()), ("message", pa.string()), ("field", pa.string()), ("value", pa.string())]
)


@dataclass
class StageContext:
    """What a stage may use besides its options: the state store (for caches such as DaData's), the project's
    settings, and whether this is a dry run (a stage that pays for requests may refuse to spend in one)."""

    pipeline: str
    project_dir: Any = None
    state_engine: Any = None  # sqlalchemy.Engine of the state store, or None
    settings: Any = None  # etl.config.ProjectConfig
    dry_run: bool = False
    console: Any = None


@dataclass
class StageResult:
    kept: pa.Table
    rejects: pa.Table  # STAGE_REJECT_SCHEMA; the engine adds stage, file, line, source id and the original row


def no_rejects() -> pa.Table:
    return STAGE_REJECT_SCHEMA.empty_table()


def rejects_where(table: pa.Table, mask: pa.ChunkedArray | pa.Array, reason: str, field: str | None,
                  message: str) -> StageResult:
    """Split ``table`` by a boolean mask: rows where it is true become rejects with one reason.

    ``message`` may hold {value} and {field}; it is formatted per rejected row (rejects are few).
    """
    mask = pc.fill_null(mask, False)
    bad = table.filter(mask)
    kept = table.filter(pc.invert(mask))
    if bad.num_rows == 0:
        return StageResult(kept, no_rejects())
    values = bad.column(field).to_pylist() if field and field in bad.column_names else [None] * bad.num_rows
    values = [None if v is None else str(v) for v in values]
    rej = pa.table(
        {
            ROW: bad.column(ROW),
            "reason": [reason] * bad.num_rows,
            "message": [message.format(value=v, field=field) for v in values],
            "field": [field] * bad.num_rows,
            "value": values,
        },
        schema=STAGE_REJECT_SCHEMA,
    )
    return StageResult(kept, rej)


class Stage(ABC):
    """A vectorised step over Arrow batches, configured by the options under `stages:` in a pipeline file."""

    type: ClassVar[str]

    def __init__(self, options: dict[str, Any], context: StageContext | None = None):
        self.options = options
        self.context = context or StageContext(pipeline="")

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        """A message when the options are wrong (shown by `etl validate`), else None."""
        return None

    @abstractmethod
    def process(self, table: pa.Table) -> StageResult: ...

    def close(self) -> None:
        """Release what the stage holds (HTTP clients, caches) at the end of the pipeline's run."""
