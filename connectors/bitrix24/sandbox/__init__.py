"""A local Bitrix24 portal that speaks the classic REST protocol over real HTTP (../shared/reference/bitrix24-rest.md).

    from connectors.bitrix24.sandbox import start_sandbox

    with start_sandbox(limits="off") as sb:          # SQLite in memory; start_sandbox("sqlite:///portal.db") keeps it
        httpx.post(sb.url + "crm.contact.add", json={"fields": {"NAME": "Anna"}}).json()
        # -> {"result": 1, "time": {...}}

``etl sandbox serve`` runs the same server from the command line. Modules: server (HTTP, auth, limits, faults),
params (PHP bracket form, JSON), envelope (answers, errors, PHP JSON), limits, faults, storage (SQLAlchemy),
crm (the CRM engine), batch, methods/ (the methods by family).
"""

from .server import Sandbox, SandboxStats, start_sandbox

__all__ = ["Sandbox", "SandboxStats", "start_sandbox"]
