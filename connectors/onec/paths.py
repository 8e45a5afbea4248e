"""Which files a 1C source reads: glob patterns relative to a base directory, each of which must match."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from connectors.base import TerminalError


def resolve_files(patterns: list[str], base_dir: Path, source: str) -> list[tuple[str, Path]]:
    """(path as matched, path to open) of every matched file, sorted; TerminalError if a pattern matches nothing."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        if os.path.isabs(pattern):
            hits = [(m, Path(m)) for m in glob.glob(pattern, recursive=True)]
        else:
            hits = [(m, base_dir / m) for m in glob.glob(pattern, root_dir=base_dir, recursive=True)]
        hits = [(rel, full) for rel, full in hits if full.is_file()]
        if not hits:
            raise TerminalError(f"{source}: no file matches {pattern!r} (base dir {str(base_dir)!r})")
        found.update(hits)
    return sorted(found.items())


def file_size(path: Path) -> int:
    """Bytes of a file for the progress count; 0 if it is gone meanwhile."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
