"""ODBC plumbing for the SQL connectors: a ``postgresql+pyodbc`` dialect and the driver options that make ODBC stream.

SQLAlchemy ships ``mssql+pyodbc`` and ``mysql+pyodbc`` but no PostgreSQL dialect over pyodbc. The one here is the
PostgreSQL dialect with SQLAlchemy's own pyodbc connector underneath, so that a PostgreSQL reached through
unixODBC (Debian's ``odbc-postgresql``, driver "PostgreSQL Unicode") runs the very code an MS SQL server reached
through ``mssql+pyodbc`` runs: pyodbc cursors, ``?`` parameters, fetchmany.

URLs::

    postgresql+pyodbc://user:password@host:5432/db?driver=PostgreSQL+Unicode
    postgresql+pyodbc:///?odbc_connect=DRIVER%3D%7BPostgreSQL+Unicode%7D%3BServer%3Dhost%3BDatabase%3Ddb...
    postgresql+pyodbc://@my_dsn                       (a DSN from odbc.ini)

ODBC drivers buffer a whole result set in the client unless told otherwise. ``streaming_connect_options`` names
the connection-string keys that stop that, per database: psqlODBC ``UseDeclareFetch=1`` with ``Fetch=N`` (rows per
round trip, through a server-side cursor), MariaDB Connector/ODBC ``NO_CACHE=1`` with ``FORWARDONLY=1``
(3.1.17 and later; older drivers, like Debian 12's 3.1.15, ignore it and buffer each result: the source's keyset
pages then bound what is held). The MS SQL ODBC driver streams default result sets as they are read, so it needs
nothing.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.connectors.pyodbc import PyODBCConnector
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import URL

__all__ = ["PGDialect_pyodbc", "odbc_keys", "add_odbc_options", "streaming_connect_options"]

_KEY_RE = re.compile(r"(?:^|;)\s*([^=;]+?)\s*=", re.IGNORECASE)


def odbc_keys(connect_string: str) -> set[str]:
    """The (lower-cased) keys of an ODBC connection string (values in braces are skipped)."""
    stripped = re.sub(r"\{(?:[^}]|\}\})*\}", "", connect_string)
    return {m.group(1).strip().lower() for m in _KEY_RE.finditer(stripped)}


def add_odbc_options(connect_string: str, options: dict[str, Any]) -> str:
    """Append ``key=value`` pairs the string does not set already (a key given by the user always wins)."""
    have = odbc_keys(connect_string)
    extra = [f"{k}={v}" for k, v in options.items() if k.lower() not in have]
    if not extra:
        return connect_string
    sep = "" if not connect_string or connect_string.rstrip().endswith(";") else ";"
    return connect_string + sep + ";".join(extra)


def streaming_connect_options(dialect_name: str, fetch_size: int) -> dict[str, Any]:
    """Connection-string options that make the ODBC driver of a database stream a result set."""
    if dialect_name == "postgresql":
        return {"UseDeclareFetch": 1, "Fetch": max(1, int(fetch_size))}
    if dialect_name in ("mysql", "mariadb"):
        return {"NO_CACHE": 1, "FORWARDONLY": 1}
    return {}


class PGDialect_pyodbc(PyODBCConnector, PGDialect):
    """PostgreSQL over pyodbc (psqlODBC or any PostgreSQL ODBC driver)."""

    supports_statement_cache = True
    pyodbc_driver_name = "PostgreSQL Unicode"

    # psqlODBC: booleans as SQL_BIT (pyodbc gives bool, not '1'/'0'); text as wide characters
    default_driver_options = {"BoolsAsChar": 0}

    def create_connect_args(self, url: URL):
        opts = url.translate_connect_args(username="user")
        query = dict(url.query)
        connect_args: dict[str, Any] = {}
        for param in ("ansi", "unicode_results", "autocommit"):
            if param in query:
                connect_args[param] = str(query.pop(param)).lower() in ("1", "true", "yes", "on")
        if "odbc_connect" in query:
            text = str(query.pop("odbc_connect"))
        else:
            def q(v: Any) -> str:  # an ODBC value with ; or braces goes in braces
                v = str(v)
                return "{%s}" % v.replace("}", "}}") if (";" in v or "}" in v or v.startswith("{")) else v

            parts: list[str] = []
            dsn = query.pop("dsn", None)
            host = opts.get("host")
            if dsn is None and host and not opts.get("database"):
                dsn = host  # postgresql+pyodbc://@my_dsn
                host = None
            if dsn is not None:
                parts.append(f"DSN={q(dsn)}")
            else:
                driver = query.pop("driver", self.pyodbc_driver_name)
                parts.append("DRIVER={%s}" % str(driver).replace("}", "}}"))
                if host:
                    parts.append(f"Server={q(host)}")
                if opts.get("port"):
                    parts.append(f"Port={int(opts['port'])}")
                if opts.get("database"):
                    parts.append(f"Database={q(opts['database'])}")
            if opts.get("user"):
                parts.append(f"UID={q(opts['user'])}")
            if opts.get("password"):
                parts.append(f"PWD={q(opts['password'])}")
            parts += [f"{k}={q(v)}" for k, v in query.items()]
            query = {}
            text = ";".join(parts)
        text = add_odbc_options(text, self.default_driver_options)
        return ((text,), connect_args)

    def _get_server_version_info(self, connection):
        # the PostgreSQL way (SELECT version()), not ODBC's SQL_DBMS_VER
        return PGDialect._get_server_version_info(self, connection)


def _register() -> None:
    registry.register("postgresql.pyodbc", __name__, "PGDialect_pyodbc")


_register()
