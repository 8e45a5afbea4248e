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
    from etl.config import CommercemlSource, EnterprisedataSource

    if isinstance(cfg, (CommercemlSource, EnterprisedataSource)):
        if isinstance(cfg, CommercemlSource):
            from connectors.onec.commerceml import CommerceMLSource as xml_source
        else:
            from connectors.onec.enterprisedata import EnterpriseDataSource as xml_source

        return xml_source(cfg.files, base_dir=project.path(cfg.dir), kind=cfg.kind, encoding=cfg.encoding,
                          embedded_counterparties=cfg.embedded_counterparties, name=pipeline.source_name)
    from etl.config import OnecDbSourceConfig, SqlSourceConfig

    if isinstance(cfg, SqlSourceConfig):
        from connectors.sql.source import SqlSource

        return SqlSource(resolve_sqlite_url(cfg.url, project.dir), table=cfg.table, schema=cfg.schema_,
                         query=cfg.query, columns=cfg.columns, key=cfg.key, watermark=cfg.watermark, mode=cfg.mode,
                         fetch_size=cfg.fetch_size, page_rows=cfg.page_rows, lookback=cfg.lookback,
                         timestamp_unit=cfg.timestamp_unit, name=pipeline.source_name)
    if isinstance(cfg, OnecDbSourceConfig):
        from connectors.onec.db import OnecDbSource

        return OnecDbSource(resolve_sqlite_url(cfg.url, project.dir), reference=cfg.reference,
                            document=cfg.document, table=cfg.table, schema=cfg.schema_, fields=dict(cfg.fields),
                            standard=cfg.standard, year_offset=cfg.year_offset, key=cfg.key,
                            watermark=cfg.watermark, mode=cfg.mode, fetch_size=cfg.fetch_size,
                            page_rows=cfg.page_rows, lookback=cfg.lookback, timestamp_unit=cfg.timestamp_unit,
                            name=pipeline.source_name)
    from etl.config import Bitrix24BackupSourceConfig

    if isinstance(cfg, Bitrix24BackupSourceConfig):
        from connectors.bitrix24.backup.sources import make_backup_source
        from etl import secrets

        password = cfg.password.get_secret_value() if cfg.password else None
        secrets.register(password)
        return make_backup_source(cfg.entity, project.path(cfg.path), password=password, charset=cfg.charset,
                                  entity_type_id=cfg.entity_type_id, iblock_id=cfg.iblock_id, table=cfg.table,
                                  include_my_companies=cfg.include_my_companies or None,
                                  default_category_name=cfg.default_category_name,
                                  cache_dir=project.path(cfg.cache_dir), name=pipeline.source_name,
                                  restart_every=int(cfg.restart_every_mb * (1 << 20)))
    from etl.config import Bitrix24PortalSourceConfig

    if isinstance(cfg, Bitrix24PortalSourceConfig):
        from connectors.bitrix24.export import PortalSource

        return PortalSource(lambda: bitrix24_client(project, cfg), cfg.entity, select=cfg.select,
                            entity_type_id=cfg.entity_type_id, iblock_id=cfg.iblock_id, iblock_code=cfg.iblock_code,
                            iblock_type=cfg.iblock_type, mode=cfg.mode, filter=dict(cfg.filter),
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
    from etl.config import Bitrix24Target

    if isinstance(target, Bitrix24Target):
        return build_bitrix24_sink(project, target, pipeline)
    raise TypeError(f"no sink for {type(target).__name__}")


# ---------------------------------------------------------------- Bitrix24
def bitrix24_client(project: Project, target: Any):
    """A Bitrix24Client for a `type: bitrix24` target (webhook or OAuth; limits profile or custom numbers)."""
    from connectors.bitrix24.auth import OAuthAuth
    from connectors.bitrix24.client import Bitrix24Client
    from connectors.bitrix24.limiter import Limits

    limits: Any = target.limits
    if not isinstance(limits, str):
        limits = Limits(burst=limits.burst, rate=limits.rate, operating=limits.operating)
    kw = dict(limits=limits, max_in_flight=target.max_in_flight, timeout=target.timeout,
              connect_timeout=target.connect_timeout, retries=target.retries)
    if target.sandbox is not None:
        sb = bundled_sandbox(project, target.sandbox)
        return Bitrix24Client(sb.url, **{**kw, "limits": target.sandbox.limits})
    if target.webhook is not None:
        return Bitrix24Client(target.webhook.get_secret_value(), **kw)
    o = target.oauth
    auth = OAuthAuth(o.client_endpoint, o.access_token.get_secret_value(), o.refresh_token.get_secret_value(),
                     o.client_id, o.client_secret.get_secret_value(), token_url=o.token_url,
                     token_file=project.path(o.token_file) if o.token_file else None)
    return Bitrix24Client(oauth=auth, **kw)


_SANDBOXES: dict[str, Any] = {}


def bundled_sandbox(project: Project, cfg: Any):
    """The bundled sandbox of a `sandbox:` target: started once per process and database, stopped at exit."""
    import atexit

    from connectors.bitrix24.sandbox import start_sandbox

    url = resolve_sqlite_url(cfg.db, project.dir)
    sb = _SANDBOXES.get(url)
    if sb is None:
        sb = start_sandbox(url, limits=cfg.limits, op_cost_ms=cfg.op_cost_ms)
        _SANDBOXES[url] = sb
        atexit.register(sb.stop)
    return sb


def build_bitrix24_sink(project: Project, target: Any, pipeline: Pipeline) -> Sink:
    from connectors.bitrix24.loader import Bitrix24Sink

    links = {}
    for lname, spec in pipeline.config.links.items():
        other = project.pipelines.get(spec.pipeline)
        if other is not None:
            links[lname] = {"pipeline": other.name, "entity": other.config.entity,
                            "options": dict(other.config.target_options)}
    return Bitrix24Sink(lambda: bitrix24_client(project, target), state_url=project.state_url(), link_targets=links)


def check_target_options(project: Project, pipeline: Pipeline) -> list[tuple[str, str]]:
    """Offline checks of a pipeline's `target_options:` by its target's kind: [(key path, message)]."""
    from etl.config import Bitrix24Target

    name = pipeline.config.target or project.config.target
    target = project.config.targets.get(name) if name else None
    if isinstance(target, Bitrix24Target):
        from connectors.bitrix24.options import check_options
        from schemas import get_entity

        return check_options(dict(pipeline.config.target_options), get_entity(pipeline.config.entity))
    return []


def check_targets(project: Project, names: list[str] | None = None) -> list[tuple[Pipeline, str]]:
    """Online checks of the targets (`etl validate`): reads only, never writes. [(pipeline, message)]."""
    from connectors.base import ConnectorError, StreamInfo
    from etl.config import Bitrix24Target
    from schemas import get_entity

    out: list[tuple[Pipeline, str]] = []
    clients: dict[str, Any] = {}
    try:
        for pname in names or project.order:
            p = project.pipelines[pname]
            tname = p.config.target or project.config.target
            target = project.config.targets.get(tname) if tname else None
            if not isinstance(target, Bitrix24Target):
                continue
            from connectors.bitrix24.loader import Bitrix24Sink

            try:
                if tname not in clients:
                    clients[tname] = bitrix24_client(project, target)
                links = {ln: {"entity": project.pipelines[s.pipeline].config.entity,
                              "options": dict(project.pipelines[s.pipeline].config.target_options)}
                         for ln, s in p.config.links.items() if s.pipeline in project.pipelines}
                sink = Bitrix24Sink(clients[tname], link_targets=links)
                entity = get_entity(p.config.entity)
                sink.open(StreamInfo(p.name, entity.name, p.origin, entity.arrow_schema(), tuple(p.config.key),
                                     "", dict(p.config.target_options)))
                out += [(p, m) for m in sink.check()]
                sink.close()
            except ConnectorError as e:
                out.append((p, f"target {tname!r}: {e}"))
    finally:
        for c in clients.values():
            c.close()
    return out
