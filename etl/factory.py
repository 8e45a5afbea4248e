"""Build connectors from validated config: the only place where the engine names concrete connectors."""

from __future__ import annotations

from typing import Any

from connectors.base import Sink, Source
from etl.config import CsvTarget, OnecFlatSource, ParquetTarget, Pipeline, Project, SqlTarget, resolve_sqlite_url


def build_source(project: Project, pipeline: Pipeline) -> Source:
    cfg = pipeline.source
    if isinstance(cfg, OnecFlatSource):
        from connectors.onec.flat import FlatFileSource

        return FlatFileSource(cfg.files, base_dir=project.path(cfg.dir), encoding=cfg.encoding,
                              delimiter=cfg.delimiter, sheet=cfg.sheet, types=dict(cfg.types),
                              name=pipeline.source_name)
    raise TypeError(f"no source for {type(cfg).__name__}")


def build_sink(project: Project, target: Any, pipeline: Pipeline) -> Sink:
    if isinstance(target, SqlTarget):
        from connectors.sql import SqlTableSink

        return SqlTableSink(resolve_sqlite_url(target.url, project.dir), schema=target.schema_,
                            table=f"{target.table_prefix}{pipeline.name}")
    if isinstance(target, ParquetTarget):
        from connectors.files import ParquetSink

        return ParquetSink(project.path(target.path))
    if isinstance(target, CsvTarget):
        from connectors.files import CsvSink

        return CsvSink(project.path(target.path), encoding=target.encoding, delimiter=target.delimiter)
    raise TypeError(f"no sink for {type(target).__name__}")
