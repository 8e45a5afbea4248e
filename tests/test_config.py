"""The project file and pipeline files: typed, strict, and every error points into the YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl.config import ConfigError, load_project
from etl.scaffold import write_project


@pytest.fixture
def cfg_project(tmp_path: Path) -> Path:
    write_project(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_the_scaffold_is_a_valid_project(cfg_project):
    p = load_project(cfg_project)
    assert p.order == ["companies", "contacts", "deals", "sites", "tickets"]
    assert p.pipelines["contacts"].source.types["ДатаРождения"] == "date"
    assert p.pipelines["contacts"].source.dir == "data"  # merged from the project's `onec` source
    assert p.state_url().startswith("sqlite:////")  # made absolute against the project


def test_the_repository_is_the_scaffold_project():
    """The pipelines.yaml and pipelines/ at the top of the repository are what `etl init` writes."""
    from etl.scaffold import FILES, template

    root = Path(__file__).resolve().parent.parent
    for name in FILES:
        assert (root / name).read_text(encoding="utf-8") == template(name), name


def test_typo_in_project_file_names_file_line_key_and_suggests(cfg_project, cli):
    f = cfg_project / "pipelines.yaml"
    edit(f, "  batch_size: 5000", "  batch_sise: 5000")
    res = cli("validate", "--offline", "-C", cfg_project)
    assert res.exit_code == 2
    line = line_of(f, "batch_sise")
    assert f"pipelines.yaml:{line}: defaults.batch_sise: unknown key 'batch_sise'; did you mean 'batch_size'?" \
        in res.output


def test_typo_in_mapping_field_suggests_the_schema_field(cfg_project, cli):
    f = cfg_project / "pipelines" / "contacts.yaml"
    edit(f, "  post: Должность", "  psot: Должность")
    res = cli("validate", "--offline", "-C", cfg_project)
    assert res.exit_code == 2
    assert f"pipelines/contacts.yaml:{line_of(f, 'psot')}: mapping.psot: unknown field 'psot' of entity contact; " \
           "did you mean 'post'?" in res.output


def test_wrong_entity_and_source_key(cfg_project):
    edit(cfg_project / "pipelines" / "contacts.yaml", "entity: contact", "entity: contacts")
    edit(cfg_project / "pipelines" / "deals.yaml", "  types:", "  typez:")
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    text = str(e.value)
    assert "pipelines/contacts.yaml:2: entity: 'contacts' is not one of" in text and "did you mean 'contact'" in text
    assert re.search(r"pipelines/deals\.yaml:\d+: source\.typez: unknown key 'typez'; did you mean 'types'\?", text)


def test_required_field_unmapped_and_unknown_link(cfg_project):
    f = cfg_project / "pipelines" / "deals.yaml"
    edit(f, "  title: Название\n", "")
    edit(f, "  contact: {pipeline: contacts", "  contakt: {pipeline: contacts")
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    text = str(e.value)
    assert "mapping: required field 'title' of entity deal is not mapped" in text
    assert "links.contakt: entity deal has no link 'contakt'; did you mean 'contact'?" in text


def test_link_to_a_later_pipeline_is_refused(cfg_project):
    f = cfg_project / "pipelines.yaml"
    edit(f, "  - companies\n  - contacts\n", "  - contacts\n  - companies\n")
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    assert "pipeline 'companies' must come before 'contacts'" in str(e.value)


def test_env_interpolation_from_dotenv_and_missing_variable(cfg_project, monkeypatch):
    f = cfg_project / "pipelines.yaml"
    edit(f, "url: ${ETL_WAREHOUSE_URL:-sqlite:///.etl/warehouse.db}", "url: ${WAREHOUSE_DSN}")
    monkeypatch.delenv("WAREHOUSE_DSN", raising=False)
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    assert f"pipelines.yaml:{line_of(f, 'WAREHOUSE_DSN')}: targets.warehouse.url: environment variable " \
           "WAREHOUSE_DSN is not set" in str(e.value)
    (cfg_project / ".env").write_text("WAREHOUSE_DSN=postgresql+psycopg://etl:S3cr3tPass@db/crm\n", encoding="utf-8")
    p = load_project(cfg_project)
    assert p.config.targets["warehouse"].url == "postgresql+psycopg://etl:S3cr3tPass@db/crm"
    from etl import secrets

    assert "S3cr3tPass" not in secrets.mask("cannot connect to postgresql+psycopg://etl:S3cr3tPass@db/crm")


def test_environment_overrides_dotenv(cfg_project, monkeypatch):
    (cfg_project / ".env").write_text("ETL_STATE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")
    assert load_project(cfg_project).config.state.url == "sqlite:///from-dotenv.db"
    monkeypatch.setenv("ETL_STATE_URL", "sqlite:///from-env.db")
    assert load_project(cfg_project).config.state.url == "sqlite:///from-env.db"


def test_unknown_stage_and_bad_stage_options(cfg_project):
    f = cfg_project / "pipelines" / "contacts.yaml"
    edit(f, "key: Код\n", "key: Код\nstages:\n  - {type: requird, columns: [Код]}\n  - {type: case, columns: [ЭлПочта], to: sideways}\n")
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    text = str(e.value)
    assert "stages[0].type: unknown stage 'requird'; did you mean 'required'?" in text
    assert "stages[1]: `to:` must be one of lower, upper, title" in text


def test_invalid_yaml_names_the_line(cfg_project):
    f = cfg_project / "pipelines" / "sites.yaml"
    f.write_text("entity: site\nsource: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_project(cfg_project)
    assert re.search(r"pipelines/sites\.yaml:\d+: invalid YAML", str(e.value))
