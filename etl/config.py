"""The project file (pipelines.yaml) and pipeline files (pipelines/*.yaml): typed models and a loader whose every
error names the file, the line, the key path and, where it can, the nearest valid key."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

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


SourceConfig = Annotated[Union[OnecFlatSource], Field(discriminator="type")]
_SOURCE_ADAPTER: TypeAdapter = TypeAdapter(SourceConfig)


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


TargetConfig = Annotated[Union[SqlTarget, ParquetTarget, CsvTarget], Field(discriminator="type")]


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


class FieldSpec(Model):
    """How a target field is made from source columns."""

    column: str | None = None
    const: Any = None
    concat: list[str] | None = None
    sep: str = " "
    template: str | None = None
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
    batch_size: int | None = Field(None, gt=0, le=1_000_000)

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


def _distance(a: str, b: str) -> int:
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
    by_edits = [o for o in options if _distance(word.lower(), o.lower()) <= max(1, len(word) // 3)]
    pool = list(dict.fromkeys(close + by_edits))
    if not pool:
        return None
    return min(pool, key=lambda o: (_distance(word.lower(), o.lower()), abs(len(o) - len(word)),
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
_MODEL_NAMES = {"str", "int", "float", "bool", "FieldSpec", "list", "dict"}


# ---------------------------------------------------------------- loading
@dataclass
class Pipeline:
    """A validated pipeline with the merged, typed source block."""

    config: PipelineConfig
    source: OnecFlatSource
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
    try:
        source = _SOURCE_ADAPTER.validate_python(block)
    except ValidationError as e:
        issues.extend(issues_from_validation(e, doc, OnecFlatSource, ("source",)))
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
