"""Shared fixtures: sample projects made by `etl init`, and fresh databases on the machine's PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

PG_BASE = os.environ.get("ETL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIA_BASE = os.environ.get("ETL_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4")


def _reachable(url: str) -> str | None:
    try:
        eng = sa.create_engine(url)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


@pytest.fixture(autouse=True)
def _sql_target_by_default(monkeypatch):
    """The sample project loads into the bundled Bitrix24 sandbox unless ETL_TARGET says otherwise; most tests
    are about the engine and use the SQL warehouse target (the Bitrix24 tests switch explicitly)."""
    monkeypatch.setenv("ETL_TARGET", "warehouse")


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    err = _reachable(PG_BASE)
    if err:
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}: {err}")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(PG_BASE)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with eng.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture
def maria_url():
    """A fresh MariaDB database, dropped afterwards."""
    err = _reachable(MARIA_BASE)
    if err:
        pytest.skip(f"MariaDB not reachable at {MARIA_BASE}: {err}")
    name = f"t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(MARIA_BASE)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    yield MARIA_BASE.replace("/test?", f"/{name}?")
    with eng.begin() as c:
        c.execute(sa.text(f"DROP DATABASE `{name}`"))
    eng.dispose()


@pytest.fixture
def cli():
    """Invoke the `etl` command in-process; returns the CliRunner result."""
    from cli import app

    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    """One sample project (config + generated data) per session; tests copy it."""
    from etl.sample import generate
    from etl.scaffold import write_project

    d = tmp_path_factory.mktemp("sample")
    write_project(d)
    generate(d / "data", companies=120, seed=7)
    return d


@pytest.fixture
def project(tmp_path, sample_template) -> Path:
    """A fresh copy of the sample project."""
    import shutil

    dest = tmp_path / "project"
    shutil.copytree(sample_template, dest)
    return dest
