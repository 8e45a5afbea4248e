"""SQL databases: the table sink (sink.py), the streaming source (source.py), and ODBC plumbing (odbc.py).

``from connectors.sql import SqlTableSink`` and ``from connectors.sql import SqlSource`` both work; importing the
package also registers the ``postgresql+pyodbc`` dialect with SQLAlchemy.
"""

from connectors.sql import odbc  # noqa: F401  (registers postgresql+pyodbc)
from connectors.sql.sink import (  # noqa: F401
    HASH_COLUMN,
    KEY_COLUMN,
    LOADED_AT_COLUMN,
    LOOKUP_CHUNK,
    ORIGIN_COLUMN,
    SERVICE_COLUMNS,
    SqlTableSink,
    _chunks,
    _mask_url_text,
    _mysql_errno,
    _mysql_strict_mode,
    arrow_to_sql_type,
    db_error_text,
)
from connectors.sql.source import SqlSource, decode_value, encode_value  # noqa: F401

__all__ = [
    "SqlTableSink", "SqlSource", "arrow_to_sql_type", "db_error_text", "encode_value", "decode_value",
    "KEY_COLUMN", "ORIGIN_COLUMN", "HASH_COLUMN", "LOADED_AT_COLUMN", "SERVICE_COLUMNS", "LOOKUP_CHUNK",
]
