"""One run at a time per project: a file lock beside the state, and an advisory lock when the state is shared."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import sqlalchemy as sa


# one lock per state store (database + schema), so projects sharing a server do not block each other
_PG_KEY = "hashtext('crm-etl run lock:' || current_database() || '.' || current_schema())"


class LockHeld(Exception):
    """Another run holds the project's lock (exit code 4)."""


class RunLock:
    def __init__(self, project_dir: Path, engine: sa.Engine | None = None):
        self.path = project_dir / ".etl" / "run.lock"
        self.engine = engine
        self._fh = None
        self._conn = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise LockHeld(f"another run holds the lock ({holder}); lock file {self.path}") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}")
        self._fh.flush()
        if self.engine is not None and self.engine.dialect.name == "postgresql":
            # runs from other machines sharing one PostgreSQL state store
            self._conn = self.engine.connect()
            got = self._conn.execute(sa.text(f"SELECT pg_try_advisory_lock({_PG_KEY})")).scalar()
            if not got:
                self._conn.close()
                self._release_file()
                raise LockHeld("another run holds the lock of the shared state store")
        return self

    def _release_file(self) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text(f"SELECT pg_advisory_unlock({_PG_KEY})"))
            finally:
                self._conn.close()
        self._release_file()
