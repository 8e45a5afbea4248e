"""The contract between the engine and the connectors: sources, sinks, rejects and the three kinds of error.

A connector knows its system and nothing of pipelines. A source yields bounded Arrow batches, each with the
opaque cursor that points just past it; a sink writes a batch and answers with the target ids it got, or a
reject per record. The engine (etl/) drives both and keeps the state.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import pyarrow as pa

# Provenance columns a source may add to every batch; the engine carries them into dead letters.
FILE_COLUMN = "_file"
LINE_COLUMN = "_line"
PROVENANCE = (FILE_COLUMN, LINE_COLUMN)

# Columns the engine adds to the batches it hands to a sink.
SOURCE_ID = "_source_id"
TARGET_ID = "_target_id"
HASH = "_hash"

REJECT_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("field", pa.string()),
        ("value", pa.string()),
        ("source_id", pa.string()),
        ("record", pa.string()),  # the original row as JSON
    ]
)


class ConnectorError(Exception):
    """Base of every error a connector raises."""


class TerminalError(ConnectorError):
    """Fatal: retrying will not help (bad credentials, a missing file, a corrupt archive)."""


class TransientError(ConnectorError):
    """Retriable: the same call may succeed later (timeouts, 5xx, rate limits). The only kind we retry."""


class BadInputError(TerminalError):
    """The input itself is broken beyond one record (an undecodable file, malformed XML)."""

    def __init__(self, message: str, *, file: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.file = file
        self.offset = offset


KEY_SEP = "|"  # between the values of a composite key in a source id


def record_json(row: Mapping[str, Any]) -> str:
    """The original row as JSON for a dead letter (provenance columns left out)."""
    return json.dumps(
        {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in row.items()
         if k not in PROVENANCE},
        ensure_ascii=False,
    )


def make_rejects(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a reject table from dicts with (a subset of) the REJECT_SCHEMA keys."""
    cols: dict[str, list] = {name: [] for name in REJECT_SCHEMA.names}
    for r in rows:
        for name in REJECT_SCHEMA.names:
            cols[name].append(r.get(name))
    return pa.table(cols, schema=REJECT_SCHEMA)


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


@dataclass
class SourceBatch:
    """A bounded batch of rows as read, the rows the source could not read, and the cursor just past both."""

    table: pa.Table
    cursor: dict
    rejects: pa.Table = field(default_factory=empty_rejects)
    progress: int | None = None  # units done so far in this pass (see Source.total), for the progress bar

    @property
    def read_count(self) -> int:
        return self.table.num_rows + self.rejects.num_rows


class Source(ABC):
    """A stream of records from one system. Subclasses declare what they read; the engine does the rest."""

    #: the unit of ``total()`` and ``SourceBatch.progress``: "rows" or "bytes"
    progress_unit: str = "rows"

    @abstractmethod
    def check(self) -> None:
        """Raise TerminalError if the source cannot be read at all (missing file, no connection)."""

    @abstractmethod
    def columns(self) -> list[str]:
        """The column names the source yields (after header clean-up), for validation of mappings."""

    @abstractmethod
    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        """Yield batches starting just past ``cursor`` (None: from the beginning)."""

    def total(self) -> int | None:
        """Total units (see progress_unit) of a full pass, when cheaply known."""
        return None

    #: an incremental source that does not read earlier rows again: the runner retries their dead letters (an
    #: unresolved link, a record the target refused) at the end of each pass through read_keys()
    retries_dead_letters: bool = False

    def read_keys(self, columns: list[str], source_ids: list[str], batch_size: int) -> Iterator[SourceBatch]:
        """The rows whose ``columns`` (the pipeline's key) hold these source ids (values as text, several joined by
        '|'), as they are now."""
        raise NotImplementedError(f"{type(self).__name__} cannot read rows by key")

    def next_pass(self, finished: dict | None) -> dict | None:
        """The cursor a new pass starts from after a pass that finished at ``finished``.

        Snapshot sources (files) start again from the beginning; incremental ones keep their watermark.
        """
        return None


@dataclass
class StreamInfo:
    """What a sink is told about the stream it is about to receive."""

    pipeline: str
    entity: str
    origin: str  # the source name written beside each record's source id (ORIGINATOR_ID)
    schema: pa.Schema  # canonical fields of the entity, as the sink will receive them
    key_fields: tuple[str, ...] = ()
    pass_id: str = ""
    options: dict = field(default_factory=dict)  # the pipeline's `target_options:`, for the sink to check and use


@dataclass
class WriteResult:
    """Target ids for the records that were written, and a reject per record that was not."""

    ids: dict[str, str] = field(default_factory=dict)  # source id -> target id
    rejects: pa.Table = field(default_factory=empty_rejects)


class Sink(ABC):
    """Where records go. Writes must be idempotent by source id."""

    #: a snapshot sink receives every accepted record of a pass, unchanged ones too (files for BI, staging)
    snapshot: bool = False

    @abstractmethod
    def open(self, stream: StreamInfo) -> None:
        """Prepare for a stream (create tables, directories)."""

    @abstractmethod
    def write(self, creates: pa.Table, updates: pa.Table) -> WriteResult:
        """Write new records and changed ones. Both carry SOURCE_ID and HASH; updates carry TARGET_ID too."""

    @abstractmethod
    def lookup(self, source_ids: list[str]) -> dict[str, str]:
        """Target ids of records already in the target, by source id: used on resume before creating again."""

    def find_matches(self, field: str, values: list[str], fields: list[str] = ()) -> dict[str, list[dict]]:
        """Entities already in the target (made by anyone) that hold these values of a match field (``phone``,
        ``email``): value -> ``[{"id": target id, <canonical field>: value for each of ``fields``}]``, lowest id
        first. Dedupe asks it about records new to us. Default: the target cannot tell."""
        return {}

    def finish_pass(self) -> None:
        """The pass is complete: publish what was staged."""

    def close(self) -> None:
        """Release connections."""
