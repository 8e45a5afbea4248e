"""The project file (pipelines.yaml) and pipeline files (pipelines/*.yaml): typed models and a loader whose every
error names the file, the line, the key path and, where it can, the nearest valid key."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from etl import secrets
from etl.yamlpos import Located, YamlError, interpolate, load_yaml, project_env
from schemas import ENTITIES

PROJECT_FILE = "pipelines.yaml"
PIPELINES_DIR = "pipelines"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- sources
ColumnType = Literal["string", "date", "datetime", "number", "integer", "boolean"]


class OnecFlatSource(Model):
    """1C flat exports: CSV/TXT (cp1251 or UTF-8, any delimiter) and XLSX."""

    type: Literal["onec_flat"]
    files: str | list[str] = Field(description="glob pattern(s), relative to `dir`")
    dir: str = Field(".", description="base directory, relative to the project")
    encoding: str = "auto"
    delimiter: str = "auto"
    sheet: str | None = None
    types: dict[str, ColumnType] = Field(default_factory=dict, description="column -> type; others stay text")


class CommercemlSource(Model):
    """1C / Bitrix CommerceML 2.x and 3.x exchange files (connectors/onec/commerceml.py lists the columns)."""

    type: Literal["commerceml"]
    files: str | list[str] = Field(description="glob pattern(s), relative to `dir`")
    dir: str = Field(".", description="base directory, relative to the project")
    kind: Literal["counterparties", "contacts", "documents", "document_items"] = "counterparties"
    encoding: str = Field("auto", description="auto: the BOM, else the XML declaration, else UTF-8")
    embedded_counterparties: bool = Field(True, description="counterparties: also those embedded in documents")

    @property
    def types(self) -> dict:  # etl.checks.check_columns reads `source.types` of every source; all columns are text
        return {}


class EnterprisedataSource(Model):
    """1C EnterpriseData exchange messages (connectors/onec/enterprisedata.py lists the columns)."""

    type: Literal["enterprisedata"]
    files: str | list[str] = Field(description="glob pattern(s), relative to `dir`")
    dir: str = Field(".", description="base directory, relative to the project")
    kind: Literal["counterparties", "documents", "document_items"] = "counterparties"
    encoding: str = Field("auto", description="auto: the BOM, else the XML declaration, else UTF-8")
    embedded_counterparties: bool = Field(True, description="counterparties: also those embedded in documents")

    @property
    def types(self) -> dict:  # etl.checks.check_columns reads `source.types` of every source; all columns are text
        return {}


from pydantic import model_validator as _model_validator  # noqa: E402  (the SQL source models below)


def _register_url_secrets(url: str) -> str:
    """Mask a database URL's password, and a PWD= inside an odbc_connect string, in every message."""
    import re as _re
    from urllib.parse import unquote_plus as _unquote

    secrets.register(url)
    for m in _re.finditer(r"(?:^|;|%3B)\s*pwd\s*(?:=|%3D)\s*(\{[^}]*\}|[^;&%]*(?:%(?!3B)[^;&%]*)*)",
                          url, _re.IGNORECASE):
        pwd = m.group(1)
        for value in {pwd, _unquote(pwd), _unquote(pwd).strip("{}")}:
            secrets.register(value)
    return url


class _SqlReadOptions(Model):
    """Keys shared by the SQL-database sources."""

    url: str = Field(description="SQLAlchemy URL: postgresql+psycopg://, mysql+pymysql://, mssql+pyodbc://, "
                                 "postgresql+pyodbc://, mysql+pyodbc:// (DSN-less: ?odbc_connect=...)")
    schema_: str | None = Field(None, alias="schema", description="database schema of the table")
    watermark: str | None = Field(None, description="incremental: a column that grows when a row changes")
    mode: Literal["full", "incremental"] | None = Field(
        None, description="full: every pass reads all rows in key order; incremental: rows past the watermark "
                          "(default: incremental when a watermark is given)")
    fetch_size: int = Field(5000, gt=0, le=1_000_000, description="rows per round trip to the database")
    page_rows: int | None = Field(50_000, gt=0, description="rows per query (keyset paging); null: one query")
    lookback: float | None = Field(None, ge=0, description="incremental: start each new pass this much before "
                                                           "the last watermark (seconds, or units)")
    timestamp_unit: Literal["s", "ms", "us"] = Field("s", description="timestamps are cut to this unit (the "
                                                                      "schemas keep seconds)")

    @field_validator("url")
    @classmethod
    def _mask_url(cls, v: str) -> str:
        return _register_url_secrets(v)

    @property
    def types(self) -> dict:  # etl.checks.check_columns reads `source.types` of every source
        return {}

    @_model_validator(mode="after")
    def _incremental_needs_watermark(self):
        if self.mode == "incremental" and not self.watermark:
            raise ValueError("mode incremental needs a `watermark` column")
        return self


class SqlSourceConfig(_SqlReadOptions):
    """Any SQL database: a table or a query, streamed in key order (full) or past a watermark (incremental)."""

    type: Literal["sql"]
    table: str | None = None
    query: str | None = Field(None, description="a SELECT without ORDER BY; its columns are the source's columns")
    columns: list[str] | None = Field(None, description="table: read only these columns (key and watermark too)")
    key: list[str] = Field(description="unique, non-NULL column(s): the order and the resume position")

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @_model_validator(mode="after")
    def _table_or_query(self):
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` and `query`")
        if self.watermark and self.watermark in self.key:
            raise ValueError(f"the watermark column {self.watermark!r} cannot also be a key column")
        return self


class OnecDbSourceConfig(_SqlReadOptions):
    """1C:Enterprise's own database: a _Reference/_Document/tabular-part table with readable column names."""

    type: Literal["onec_db"]
    reference: str | None = Field(None, description="a catalog table, e.g. _Reference42")
    document: str | None = Field(None, description="a document table, e.g. _Document18335")
    table: str | None = Field(None, description="any other table, e.g. a tabular part _Reference42_VT50")
    fields: dict[str, str] = Field(default_factory=dict, description="readable name -> column, e.g. ИНН: _Fld1234")
    standard: bool = Field(True, description="also Код, Наименование, ПометкаУдаления, Родитель, ЭтоГруппа...")
    year_offset: int | Literal["auto"] = Field("auto", description="years 1C added to dates (2000), or auto: "
                                                                   "read from _YearOffset")
    key: list[str] | None = Field(None, description="default: _IDRRef (tabular part: owner link + _LineNo)")

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @_model_validator(mode="after")
    def _one_table(self):
        if sum(x is not None for x in (self.reference, self.document, self.table)) != 1:
            raise ValueError("give exactly one of `reference`, `document` and `table`")
        return self


class Bitrix24BackupSourceConfig(Model):
    """A Bitrix24 / 1C-Bitrix backup read without restoring it: a CBackup archive (X.tar.gz, X.enc.gz... and its
    volumes .1, .2...) or a dump (X.sql and its parts, a mysqldump file)."""

    type: Literal["bitrix24_backup"]
    path: str = Field(description="the archive's first volume or the .sql dump, relative to the project")
    entity: Literal["company", "contact", "deal", "smart_process", "list_element", "table"]
    password: SecretStr | None = Field(None, description="for encrypted archives, e.g. ${BACKUP_PASSWORD}")
    charset: str | None = Field(None, description="override the dump's SET NAMES (utf8, cp1251)")
    entity_type_id: int | None = Field(None, description="smart_process: the type's entityTypeId (e.g. 130)")
    iblock_id: int | None = Field(None, description="list_element: the list's iblock ID")
    table: str | None = Field(None, description="table: any table of the dump; smart_process: its item table")
    include_my_companies: bool = Field(False, description="company: keep IS_MY_COMPANY='Y' rows")
    default_category_name: str | None = Field(None, description="deal: name of pipeline 0 if the backup has none")
    cache_dir: str = Field(".etl/cache/bitrix24_backup", description="where the prepass keeps its join tables")
    restart_every_mb: float = Field(16, gt=0, description="a .tar.gz is entered again (a pass reaching its table, a "
                                                          "resume) at a gzip member start at most this far before "
                                                          "the point wanted; smaller: less to inflate, a bigger cache")

    @property
    def types(self) -> dict:  # etl.checks.check_columns reads `source.types` of every source
        return {}

    @_model_validator(mode="after")
    def _entity_needs(self):
        need = {"smart_process": "entity_type_id", "list_element": "iblock_id", "table": "table"}.get(self.entity)
        if need and getattr(self, need) is None:
            raise ValueError(f"entity {self.entity} needs `{need}`")
        return self


# Every source model, by its `type`. A new source: a model with `type: Literal[...]`, added here and in factory.py.
SOURCE_MODELS: dict[str, type[Model]] = {"onec_flat": OnecFlatSource}
SOURCE_MODELS["commerceml"] = CommercemlSource
SOURCE_MODELS["enterprisedata"] = EnterprisedataSource
SOURCE_MODELS["sql"] = SqlSourceConfig
SOURCE_MODELS["onec_db"] = OnecDbSourceConfig
SOURCE_MODELS["bitrix24_backup"] = Bitrix24BackupSourceConfig


def validate_source(block: dict) -> Model:
    """Validate a merged source block with the model its `type` names."""
    model = SOURCE_MODELS.get(block.get("type"))  # type: ignore[arg-type]
    if model is None:
        raise ValueError(block.get("type"))
    return model.model_validate(block)


# ---------------------------------------------------------------- targets
class SqlTarget(Model):
    """A table per pipeline in any SQLAlchemy database."""

    type: Literal["sql"]
    url: str
    schema_: str | None = Field(None, alias="schema")
    table_prefix: str = ""


class ParquetTarget(Model):
    """A Parquet dataset directory per pipeline (staging, BI)."""

    type: Literal["parquet"]
    path: str


class CsvTarget(Model):
    """A CSV file per pipeline (BI, hand-off)."""

    type: Literal["csv"]
    path: str
    encoding: str = "utf-8-sig"
    delimiter: str = ";"


class Bitrix24OAuth(Model):
    """OAuth 2.0 of a Bitrix24 application: the access token is refreshed on `expired_token`."""

    client_endpoint: str = Field(description="https://<portal>/rest/")
    access_token: SecretStr
    refresh_token: SecretStr
    client_id: str
    client_secret: SecretStr
    token_url: str = "https://oauth.bitrix.info/oauth/token/"
    token_file: str | None = Field(None, description="where refreshed tokens are kept (the refresh token rotates)")


class Bitrix24Limits(Model):
    """Custom limits (instead of a profile name): the leaky bucket and the per-method operating budget."""

    burst: float | None = Field(50, description="requests the bucket holds; null: no bucket")
    rate: float = Field(2.0, gt=0, description="requests drained per second")
    operating: float | None = Field(480.0, description="operating seconds per method per 10 minutes; null: off")


class Bitrix24Sandbox(Model):
    """The bundled local Bitrix24 (`etl sandbox`), started inside the run: for rehearsals and the sample project."""

    db: str = Field("sqlite:///.etl/sandbox.db", description="where the sandbox keeps its CRM")
    limits: Literal["cloud", "enterprise", "off"] = "off"
    op_cost_ms: float = Field(0, ge=0)

    @field_validator("limits", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v


class Bitrix24Target(Model):
    """A Bitrix24 portal over its REST API: an incoming webhook URL or OAuth settings (from ${ENV}), or the
    bundled sandbox."""

    type: Literal["bitrix24"]
    sandbox: Bitrix24Sandbox | None = None
    webhook: SecretStr | None = Field(None, description="https://<portal>/rest/<user id>/<code>/")
    oauth: Bitrix24OAuth | None = Field(None, validate_default=True)
    limits: Literal["cloud", "enterprise", "self_hosted", "off"] | Bitrix24Limits = "cloud"
    max_in_flight: int | None = Field(None, ge=1, le=32, description="requests at a time (default: 1 cloud, 4 else)")
    timeout: float = Field(90.0, gt=0, description="seconds to wait for an answer (the cloud cuts at 60)")
    connect_timeout: float = Field(10.0, gt=0)
    retries: int = Field(8, ge=1, le=100, description="attempts per request for what is safe to repeat")

    @field_validator("limits", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @field_validator("oauth")
    @classmethod
    def _one_auth(cls, v, info):
        given = [k for k, x in (("sandbox", info.data.get("sandbox")), ("webhook", info.data.get("webhook")),
                                ("oauth", v)) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `webhook`, `oauth` or `sandbox`"
                             + (f" (got {', '.join(given)})" if given else ""))
        return v


TargetConfig = Annotated[Union[SqlTarget, ParquetTarget, CsvTarget, Bitrix24Target], Field(discriminator="type")]


class Bitrix24PortalSourceConfig(Bitrix24Target):
    """A live Bitrix24 portal read over REST (connectors/bitrix24/export.py): the same connection keys as a
    `type: bitrix24` target (webhook / oauth from ${ENV}, or `sandbox:`), and what to read. Reads only."""

    type: Literal["bitrix24_portal"]  # type: ignore[assignment]
    entity: Literal["company", "contact", "deal", "smart_process", "list_element"]
    select: list[str] | None = Field(None, description="portal field names to read (default: the usual ones)")
    entity_type_id: int | None = Field(None, description="smart_process: its entityTypeId (128+)")
    iblock_id: int | None = Field(None, description="list_element: the list's IBLOCK_ID")
    iblock_code: str | None = Field(None, description="list_element: or its IBLOCK_CODE")
    iblock_type: str = Field("lists", description="list_element: IBLOCK_TYPE_ID")
    mode: Literal["full", "incremental"] = Field(
        "full", description="incremental: by DATE_MODIFY (crm.item: updatedTime), the next run reads what changed")
    filter: dict[str, Any] = Field(default_factory=dict, description="an extra portal filter, e.g. {CATEGORY_ID: 0}")

    @property
    def types(self) -> dict:  # etl.checks.check_columns reads `source.types` of every source
        return {}

    @field_validator("webhook")
    @classmethod
    def _mask_webhook(cls, v):
        if v is not None:
            secrets.register(v.get_secret_value())
        return v

    @_model_validator(mode="after")
    def _portal_entity_needs(self):
        if self.entity == "smart_process" and self.entity_type_id is None:
            raise ValueError("entity smart_process needs `entity_type_id`")
        if self.entity == "list_element" and self.iblock_id is None and not self.iblock_code:
            raise ValueError("entity list_element needs `iblock_id` or `iblock_code`")
        if self.entity == "list_element" and self.mode == "incremental":
            raise ValueError("list_element is read in mode full only")
        return self


SOURCE_MODELS["bitrix24_portal"] = Bitrix24PortalSourceConfig


# ---------------------------------------------------------------- project
class StateConfig(Model):
    url: str = Field("sqlite:///.etl/state.db", description="SQLAlchemy URL of the state store")


class Defaults(Model):
    batch_size: int = Field(5000, gt=0, le=1_000_000)
    max_reject_rate: float = Field(0.05, ge=0, le=1, description="exit 1 above this share of rejected records")
    max_rejects: int | None = Field(None, ge=0, description="exit 1 above this many rejected records")


class DadataConfig(Model):
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    base_url: str | None = None
    timeout: float = 10.0
    max_requests_per_run: int | None = None
    # DaData's published clean limits per IP; lower them for a shared IP, raise them for the self-hosted edition
    requests_per_second: float = Field(20.0, gt=0, description="requests per second at most (evenly spaced)")
    connections_per_minute: int = Field(60, gt=0, description="new connections per minute at most (keep-alive)")
    workers: int = Field(4, ge=1, le=32, description="requests in flight at once")
    retries: int = Field(5, ge=0, le=20, description="retries of a 429, 5xx, timeout or dropped connection")
    retry_wait: float = Field(0.5, ge=0, le=60, description="first back-off in seconds (doubles, with jitter)")


class ProjectConfig(Model):
    version: Literal[1] = 1
    name: str = "crm-etl project"
    state: StateConfig = Field(default_factory=StateConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    dadata: DadataConfig | None = None
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    target: str | None = Field(None, description="the default target of every pipeline")
    pipelines: list[str] = Field(default_factory=list, description="pipeline names in load order")

    @field_validator("sources")
    @classmethod
    def _sources_have_type(cls, v: dict) -> dict:
        for name, spec in v.items():
            if not isinstance(spec, dict) or "type" not in spec:
                raise ValueError(f"source {name!r} needs a `type`")
        return v


# ---------------------------------------------------------------- pipelines
class ColumnRule(Model):
    """A filter condition on one source column."""

    column: str
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    not_empty: bool | None = None
    matches: str | None = None


class DateFormat(Model):
    """`date:` of a mapped field: the source gives dates as text in these strptime formats (tried in order)."""

    format: list[str]

    @field_validator("format", mode="before")
    @classmethod
    def _format_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class NumberFormat(Model):
    """`number:` of a mapped field: the source gives numbers as text with this decimal mark and grouping."""

    decimal: str = "."
    thousands: str | None = None


class LookupSpec(Model):
    """`lookup:` of a mapped field: the value is looked up by `key` in a table file and replaced by its `value`."""

    file: str
    key: str
    value: str
    normalise: Literal["name", "lower", "none"] = "none"
    default: Any = None
    encoding: str = "auto"
    delimiter: str = "auto"


class CaseSpec(Model):
    """One alternative of `cases:`: the first whose `when` holds gives the value."""

    when: ColumnRule
    column: str | None = None
    const: Any = None
    template: str | None = None


class FieldSpec(Model):
    """How a target field is made from source columns."""

    column: str | None = None
    const: Any = None
    concat: list[str] | None = None
    sep: str = " "
    template: str | None = None
    cases: list[CaseSpec] | None = None
    date: DateFormat | None = None
    number: NumberFormat | None = None
    lookup: LookupSpec | None = None
    map: dict[str, Any] | None = None
    default: Any = None


class LinkSpec(Model):
    """A link to a record of another pipeline, by that pipeline's key held in a column of ours."""

    pipeline: str
    column: str
    required: bool | None = None


class StageSpec(Model):
    model_config = ConfigDict(extra="allow")
    type: str


class DedupeSpec(Model):
    """Records that are one contact or company under different keys, merged into one target record."""

    match: list[list[str]] = Field(description="rules: each a list of canonical fields that must all agree; any rule "
                                               "matching joins two records (phones, e-mails: any shared value)")
    distinct_by: list[str] = Field(default_factory=list,
                                   description="fields that keep two records apart when both have them and they "
                                               "differ (an initial agrees with a name that starts with it)")
    policy: Literal["first", "newest", "fill_empty"] = "first"
    newest_by: str | None = Field(None, description="the canonical field that says which record is newest")
    against_target: bool = Field(True, description="also look in the target for records new to us "
                                                   "(crm.duplicate.findbycomm on Bitrix24)")

    @field_validator("match", mode="before")
    @classmethod
    def _rules(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [[r] if isinstance(r, str) else r for r in v]
        return v


class PipelineConfig(Model):
    name: str
    entity: Literal["company", "contact", "deal", "site", "ticket"]
    description: str | None = None
    source: dict[str, Any]
    key: list[str]
    origin: str | None = Field(None, description="source name written beside each id; default: the source's name")
    filter: list[ColumnRule] = Field(default_factory=list)
    stages: list[StageSpec] = Field(default_factory=list)
    mapping: dict[str, str | FieldSpec]
    links: dict[str, LinkSpec] = Field(default_factory=dict)
    target: str | None = None
    target_options: dict[str, Any] = Field(default_factory=dict,
                                           description="options for this pipeline's sink (checked by the sink)")
    batch_size: int | None = Field(None, gt=0, le=1_000_000)
    dedupe: DedupeSpec | None = None

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


# ---------------------------------------------------------------- errors
@dataclass
class ConfigIssue:
    file: str
    line: int | None
    path: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        out = f"{where}: {self.path + ': ' if self.path else ''}{self.message}"
        if self.suggestion:
            out += f"; did you mean {self.suggestion!r}?"
        return secrets.mask(out)


class ConfigError(Exception):
    """One or more problems in the configuration; exit code 2."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits, with adjacent transpositions)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def suggest(word: str, options: typing.Iterable[str]) -> str | None:
    """The nearest valid word: fewest edits, then the closest length, then difflib's similarity."""
    word = str(word)
    options = [str(o) for o in options]
    close = difflib.get_close_matches(word, options, n=5, cutoff=0.6)
    by_edits = [o for o in options if edit_distance(word.lower(), o.lower()) <= max(1, len(word) // 3)]
    pool = list(dict.fromkeys(close + by_edits))
    if not pool:
        return None
    return min(pool, key=lambda o: (edit_distance(word.lower(), o.lower()), abs(len(o) - len(word)),
                                    -difflib.SequenceMatcher(None, word, o).ratio()))


def dotted(path: typing.Sequence) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _fields_at(model: type, loc: tuple) -> list[str] | None:
    """The valid keys of the model found by following ``loc`` from ``model`` (best effort)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = next((f for n, f in tp.model_fields.items() if n == part or f.alias == part), None)
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) == 1:
                tp = models[0]
            elif len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def issues_from_validation(err: ValidationError, doc: Located, model: type, prefix: tuple = ()) -> list[ConfigIssue]:
    out = []
    for e in err.errors():
        loc = _data_path(e["loc"], doc.data if not prefix else _at(doc.data, prefix))
        path = prefix + loc
        suggestion = None
        if e["type"] == "extra_forbidden":
            valid = _fields_at(model, loc[:-1]) or []
            suggestion = suggest(loc[-1], valid)
            msg = f"unknown key {loc[-1]!r}" + (f" (valid: {', '.join(valid)})" if valid and not suggestion else "")
        elif e["type"] in ("literal_error", "union_tag_invalid"):
            expected = (e.get("ctx") or {}).get("expected", "") or (e.get("ctx") or {}).get("expected_tags", "")
            options = [o.strip().strip("'\"") for o in str(expected).replace(" or ", ",").split(",") if o.strip()]
            value = e.get("input")
            if isinstance(value, dict):
                value = value.get("type")
            suggestion = suggest(value, options) if value is not None else None
            msg = f"{value!r} is not one of {', '.join(options)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
        out.append(ConfigIssue(doc.file, doc.line(path), dotted(path), msg, suggestion))
    return out


def _at(data: Any, path: tuple) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _data_path(loc: tuple, data: Any) -> tuple:
    """Drop the parts of a pydantic error location that are union tags, not keys of the YAML."""
    out = []
    for p in loc:
        if isinstance(data, dict) and p in data:
            data = data[p]
        elif isinstance(data, list) and isinstance(p, int) and 0 <= p < len(data):
            data = data[p]
        elif isinstance(p, str) and (p in _DISCRIMINATORS or p in _MODEL_NAMES or "[" in p):
            continue
        else:
            data = None  # a missing or an extra key: keep it and stop descending
        out.append(p)
    return tuple(out)


_DISCRIMINATORS = {"onec_flat", "sql", "parquet", "csv"}
_DISCRIMINATORS |= {"bitrix24"}
_MODEL_NAMES = {"str", "int", "float", "bool", "FieldSpec", "list", "dict"}


# ---------------------------------------------------------------- loading
@dataclass
class Pipeline:
    """A validated pipeline with the merged, typed source block."""

    config: PipelineConfig
    source: Model  # one of SOURCE_MODELS
    source_name: str
    doc: Located

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def origin(self) -> str:
        return self.config.origin or self.source_name


@dataclass
class Project:
    dir: Path
    config: ProjectConfig
    pipelines: dict[str, Pipeline]
    doc: Located
    env: dict[str, str] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        return list(self.config.pipelines)

    def path(self, p: str) -> Path:
        pp = Path(p)
        return pp if pp.is_absolute() else self.dir / pp

    def state_url(self) -> str:
        return resolve_sqlite_url(self.config.state.url, self.dir)

    def target_of(self, pipeline: Pipeline) -> tuple[str, Any]:
        name = pipeline.config.target or self.config.target
        if not name:
            raise ConfigError([ConfigIssue(pipeline.doc.file, pipeline.doc.line(("target",)), "target",
                                           "no target: set `target:` here or in pipelines.yaml")])
        return name, self.config.targets[name]


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the project directory (and create its folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        rel = url[len(prefix):]
        path = (base / rel).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def load_project(project_dir: Path | str = ".") -> Project:
    """Load and validate pipelines.yaml and every pipeline it lists. Raises ConfigError with all issues found."""
    project_dir = Path(project_dir).resolve()
    env = project_env(project_dir)
    issues: list[ConfigIssue] = []
    try:
        doc = load_yaml(project_dir / PROJECT_FILE, PROJECT_FILE)
    except YamlError as e:
        raise ConfigError([ConfigIssue(e.file, e.line, "", e.message)]) from None
    data = _interpolated(doc, env, issues)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(doc.file, 1, "", "the project file must be a mapping")])
    try:
        cfg = ProjectConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(issues + issues_from_validation(e, doc, ProjectConfig)) from None
    _register_secrets(cfg)
    if cfg.target and cfg.target not in cfg.targets:
        issues.append(ConfigIssue(doc.file, doc.line(("target",)), "target", f"unknown target {cfg.target!r}",
                                  suggest(cfg.target, cfg.targets)))

    pipelines: dict[str, Pipeline] = {}
    for i, name in enumerate(cfg.pipelines):
        path = project_dir / PIPELINES_DIR / f"{name}.yaml"
        display = f"{PIPELINES_DIR}/{name}.yaml"
        if not path.is_file():
            known = [p.stem for p in (project_dir / PIPELINES_DIR).glob("*.yaml")]
            issues.append(ConfigIssue(doc.file, doc.line(("pipelines", i)), f"pipelines[{i}]",
                                      f"no pipeline file {display}", suggest(name, known)))
            continue
        try:
            pdoc = load_yaml(path, display)
        except YamlError as e:
            issues.append(ConfigIssue(e.file, e.line, "", e.message))
            continue
        p = _load_pipeline(pdoc, name, cfg, env, issues)
        if p is not None:
            if p.name in pipelines:
                issues.append(ConfigIssue(pdoc.file, pdoc.line(("name",)), "name", f"pipeline name {p.name!r} used twice"))
            pipelines[p.name] = p
    project = Project(project_dir, cfg, pipelines, doc, env)
    if issues:
        raise ConfigError(issues)
    from etl.checks import check_semantics  # the checks that need schemas and other pipelines

    issues += check_semantics(project)
    if issues:
        raise ConfigError(issues)
    return project


def _interpolated(doc: Located, env: dict, issues: list[ConfigIssue]) -> Any:
    missing: list = []
    data = interpolate(doc.data, env, (), secrets.register, missing)
    for path, var in missing:
        issues.append(ConfigIssue(doc.file, doc.line(path), dotted(path),
                                  f"environment variable {var} is not set (set it, add it to .env, or use ${{{var}:-default}})"))
    return data


def _register_secrets(cfg: ProjectConfig) -> None:
    for t in cfg.targets.values():
        if isinstance(t, SqlTarget):
            secrets.register(t.url)
        if isinstance(t, Bitrix24Target):  # the webhook code and the OAuth tokens
            for sec in (t.webhook, *((t.oauth.access_token, t.oauth.refresh_token, t.oauth.client_secret)
                                     if t.oauth else ())):
                if sec is not None:
                    secrets.register(sec.get_secret_value())
    secrets.register(cfg.state.url)
    if cfg.dadata:
        for s in (cfg.dadata.api_key, cfg.dadata.secret):
            if s is not None:
                secrets.register(s.get_secret_value())


def _load_pipeline(doc: Located, name: str, cfg: ProjectConfig, env: dict, issues: list[ConfigIssue]) -> Pipeline | None:
    data = _interpolated(doc, env, issues)
    if not isinstance(data, dict):
        issues.append(ConfigIssue(doc.file, 1, "", "a pipeline file must be a mapping"))
        return None
    data.setdefault("name", name)
    try:
        pc = PipelineConfig.model_validate(data)
    except ValidationError as e:
        issues.extend(issues_from_validation(e, doc, PipelineConfig))
        return None
    # merge the project source (`use: name`) under the pipeline's own keys
    block = dict(pc.source)
    source_name = block.pop("use", None)
    if source_name is not None:
        if source_name not in cfg.sources:
            issues.append(ConfigIssue(doc.file, doc.line(("source", "use")), "source.use",
                                      f"unknown source {source_name!r}", suggest(source_name, cfg.sources)))
            return None
        block = {**cfg.sources[source_name], **block}
    else:
        source_name = pc.name
    stype = block.get("type")
    if stype not in SOURCE_MODELS:
        where = ("source", "type") if "type" in pc.source else ("source", "use")
        issues.append(ConfigIssue(doc.file, doc.line(where), "source.type",
                                  f"unknown source type {stype!r} (known: {', '.join(SOURCE_MODELS)})",
                                  suggest(stype, SOURCE_MODELS) if stype else None))
        return None
    try:
        source = validate_source(block)
    except ValidationError as e:
        issues.extend(issues_from_validation(e, doc, SOURCE_MODELS[stype], ("source",)))
        return None
    if pc.target and pc.target not in cfg.targets:
        issues.append(ConfigIssue(doc.file, doc.line(("target",)), "target", f"unknown target {pc.target!r}",
                                  suggest(pc.target, cfg.targets)))
    return Pipeline(pc, source, source_name, doc)


__all__ = [
    "ConfigError", "ConfigIssue", "Pipeline", "PipelineConfig", "Project", "ProjectConfig", "load_project",
    "ENTITIES", "FieldSpec", "LinkSpec", "ColumnRule", "StageSpec", "SqlTarget", "ParquetTarget", "CsvTarget",
    "OnecFlatSource", "suggest",
]
