"""How fast the Bitrix24 sandbox answers with limits off: the ceiling a loader can reach against it.

    python bench/sandbox.py [--db URL] [--seconds 5] [--clients 1,4]

Starts `etl sandbox serve --limits off` in its own process (so the client does not share its GIL) and prints, per
number of concurrent clients: requests/s of a trivial method, of single crm.contact.add calls, and of batches of 50
crm.contact.add (with commands/s), plus list lookups by key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def run_for(seconds: float, clients: int, url: str, make_request) -> tuple[int, float]:
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = 0
            while time.monotonic() < stop:
                r = make_request(http, n, i)
                assert r.status_code == 200, r.text[:200]
                counts[n] += 1
                i += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,4")
    args = ap.parse_args()
    cmd = [sys.executable, "-c", "import cli; cli.main()", "sandbox", "serve", "--limits", "off", "--quiet"]
    if args.db:
        cmd += ["--db", args.db]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = proc.stdout.readline().strip()
        print(f"sandbox {url.rsplit('/rest/', 1)[0]} (limits off, db {args.db or 'sqlite in memory'})")

        def trivial(http, n, i):
            return http.post("user.current")

        def single_add(http, n, i):
            return http.post("crm.contact.add", json={"fields": {"NAME": f"S{n}-{i}", "ORIGINATOR_ID": "bench",
                                                                 "ORIGIN_ID": f"s{n}-{i}",
                                                                 "PHONE": [{"VALUE": f"+7900{i:07d}"}]}})

        def batch_add(http, n, i):
            cmds = {f"c{k}": f"crm.contact.add?fields[NAME]=B{n}-{i}-{k}&fields[ORIGINATOR_ID]=bench"
                             f"&fields[ORIGIN_ID]=b{n}-{i}-{k}&fields[PHONE][0][VALUE]=%2B7901{i:05d}{k:02d}"
                             f"&fields[EMAIL][0][VALUE]=b{n}.{i}.{k}%40example.com" for k in range(50)}
            return http.post("batch", json={"cmd": cmds})

        def lookup(http, n, i):
            keys = [f"b{n}-{max(i - 1, 0)}-{k}" for k in range(50)]
            return http.post("crm.contact.list", json={"filter": {"ORIGINATOR_ID": "bench", "ORIGIN_ID": keys},
                                                       "select": ["ID", "ORIGIN_ID"], "start": -1})

        for clients in [int(c) for c in args.clients.split(",")]:
            for name, fn, per in (("user.current", trivial, 1), ("crm.contact.add (single)", single_add, 1),
                                  ("batch of 50 crm.contact.add", batch_add, 50),
                                  ("crm.contact.list of 50 keys", lookup, 1)):
                n, dt = run_for(args.seconds, clients, url, fn)
                extra = f", {n * per / dt:8,.0f} commands/s" if per > 1 else ""
                print(f"{clients} client(s)  {name:30s} {n / dt:8,.0f} requests/s{extra}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
