"""`etl sandbox serve` as a user runs it: a separate process that prints its webhook URL and serves until stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "sandbox", "serve", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_prints_the_webhook_url_answers_over_http_and_keeps_its_sqlite_portal(tmp_path):
    db = f"sqlite:///{tmp_path / 'portal.db'}"
    proc = serve("--port", "0", "--db", db, "--limits", "cloud", "--token", "cli-token-1", "--op-cost-ms", "5")
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/rest/1/cli-token-1/")
        with httpx.Client(base_url=url, timeout=10) as http:
            r = http.post("crm.contact.add", data={"fields[NAME]": "Из консоли"})
            assert r.status_code == 200 and r.json()["result"] == 1
            assert r.json()["time"]["operating"] >= 0.005  # cloud limits and the op cost are on
            bad = httpx.post(url.replace("cli-token-1", "wrong") + "user.current")
            assert bad.status_code == 401
    finally:
        assert stop(proc) == 0  # Ctrl-C is the normal way to stop it
    assert "sandbox stopped" in proc.stderr.read()
    proc = serve("--db", db, "--limits", "off", "--token", "cli-token-1", "--json")
    try:
        info = json.loads(proc.stdout.readline())
        assert info["event"] == "sandbox" and info["limits"] == "off"
        got = httpx.post(info["url"] + "crm.contact.get", json={"id": 1}).json()["result"]
        assert got["NAME"] == "Из консоли"
    finally:
        assert stop(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize("args, message", [
    (["--faults", "503=lots"], "not a number"),
    (["--faults", "boom=0.1"], "unknown fault"),
    (["--limits", "nope"], "unknown limits"),
    (["--batch-billing", "sometimes"], "batch_billing"),
])
def test_serve_refuses_bad_options_with_exit_code_2(cli, args, message):
    result = cli("sandbox", "serve", *args)
    assert result.exit_code == 2 and message in result.output


def test_serve_with_faults_injects_them(tmp_path):
    proc = serve("--limits", "off", "--faults", "503=1.0")
    try:
        url = proc.stdout.readline().strip()
        r = httpx.post(url + "user.current")
        assert r.status_code == 503 and r.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    finally:
        assert stop(proc) == 0
