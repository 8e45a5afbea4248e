"""The methods the sandbox serves, by name (lower case: Bitrix24 method names are case-insensitive).

A handler takes ``(call, params)`` and returns a :class:`~..envelope.Result` (or a bare payload), or raises
:class:`~..envelope.ApiError`. By default the dispatcher opens one transaction per command (``call.ctx`` holds
it); handlers registered with ``tx=False`` (batch, crm.item.batchImport) open their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..crm import Ctx


@dataclass
class MethodSpec:
    name: str
    fn: Callable
    tx: bool = True
    batch: bool = True  # allowed inside a batch


REGISTRY: dict[str, MethodSpec] = {}


def method(*names: str, tx: bool = True, batch: bool = True):
    def deco(fn):
        for n in names:
            REGISTRY[n.lower()] = MethodSpec(n, fn, tx, batch)
        return fn
    return deco


@dataclass
class Call:
    """One command being executed: the sandbox, the calling credential, and (with tx) the open transaction."""

    sandbox: Any
    user_id: int
    cred: str
    ctx: Ctx | None = None
    after_commit: list = field(default_factory=list)
    nested: bool = False

    @property
    def store(self):
        return self.sandbox.store

    @property
    def crm(self):
        return self.sandbox.crm


def load_all() -> None:
    """Import the method modules (each registers its methods)."""
    from . import crm_item, crm_legacy, crm_misc, lists, users  # noqa: F401
    from .. import batch  # noqa: F401
