"""YAML loading that remembers where every key came from, and ${VAR} interpolation from the environment.

Every config error names the file, the line and the key path; this module keeps the positions that make it possible.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

Path_ = tuple  # a key path: ("pipelines", 0) or ("mapping", "phone")


@dataclass
class Located:
    """A loaded YAML document: the data, the file it came from and the line of every key path."""

    data: Any
    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, path: tuple) -> int | None:
        """The line of the deepest known prefix of ``path`` (1-based)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


class YamlError(Exception):
    def __init__(self, file: str, line: int | None, message: str):
        super().__init__(f"{file}:{line or 1}: {message}")
        self.file, self.line, self.message = file, line, message


def load_yaml(path: Path, display: str | None = None) -> Located:
    """Load one YAML file, keeping the line of each key path."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise YamlError(display, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise YamlError(display, None, f"not UTF-8 text (byte {e.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(display, line, f"invalid YAML: {e.problem or e}") from None
    located = Located(data if data is not None else {}, display)
    if node is not None:
        _walk(node, (), located.lines)
    return located


def _walk(node: yaml.Node, path: tuple, lines: dict) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[path + (key,)] = k.start_mark.line + 1
            _walk(v, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PASS|KEY|WEBHOOK|AUTH|CREDENTIAL)", re.I)


class MissingVariable(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def interpolate(value: Any, env: Mapping[str, str], path: tuple = (), on_secret=None, errors=None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of ``value``; $$ is a literal $.

    ``on_secret(value)`` is called for every substituted value whose variable name looks like a secret, so that it
    can be masked in logs. Missing variables are appended to ``errors`` as (path, name).
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, path + (k,), on_secret, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, path + (i,), on_secret, errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            out = env[name]
        elif default is not None:
            out = default
        else:
            if errors is not None:
                errors.append((path, name))
            return ""
        if on_secret and out and SECRET_NAME.search(name):
            on_secret(out)
        return out

    return _VAR.sub(sub, value)


def project_env(project_dir: Path) -> dict[str, str]:
    """The variables a project sees: its .env file, overridden by the real environment."""
    env: dict[str, str] = {}
    dotenv = project_dir / ".env"
    if dotenv.is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ)
    return env
