"""`etl init`: the files of a working sample project."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

FILES = ["pipelines.yaml", "pipelines/companies.yaml", "pipelines/contacts.yaml", "pipelines/deals.yaml",
         "pipelines/sites.yaml", "pipelines/tickets.yaml"]


def template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def write_project(directory: Path, force: bool = False) -> list[str]:
    """Write the project files that are missing (all of them with force). Returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES + [".env.example"]:
        dest = directory / name
        if dest.exists() and not force:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(template("env.example" if name == ".env.example" else name), encoding="utf-8")
        written.append(name)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".etl/\n.env\nout/\n", encoding="utf-8")
        written.append(".gitignore")
    return written
