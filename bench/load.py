"""Records/s of loading contacts into the Bitrix24 sandbox through `etl run`, and peak RSS.

    python bench/load.py [--records 10000] [--op-cost-ms 5] [--only cloud|off]

Two scenarios, each in fresh child processes: the sandbox portal in one (its own core; SQLite in memory), the
`etl run` of a one-pipeline project (a UTF-8 CSV of generated contacts with two phones and an e-mail each -> the
contact sink: batches of 50 commands) in the other.

(a) cloud: the portal enforces cloud limits (leaky bucket 50 burst / 2 per s, operating budget 480 s per method)
    and bills every command --op-cost-ms of simulated server time (slept, too). The ceiling those limits allow is
    the least time the bucket lets ceil(records / 50) batch requests through (the burst at once, then 2 per s),
    and the operating budget (which --op-cost-ms keeps far from binding over this run). Reported: records/s, the
    fraction of the ceiling, and the 503 / 429 answers (the target: >= 0.95 and zero).
(b) off: no limits, 4 requests in flight (a self-hosted portal). Target >= 1,000 records/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SANDBOX = textwrap.dedent("""\
    import json, sys
    from connectors.bitrix24.sandbox import start_sandbox
    sb = start_sandbox(limits=sys.argv[1], op_cost_ms=float(sys.argv[2]))
    print(sb.url, flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(sb.stats.snapshot()), flush=True)
        elif line.strip() == "quit":
            break
    sb.stop()
""")

PROJECT = """\
version: 1
name: bench-load
state: {url: "sqlite:///.etl/state.db"}
defaults: {batch_size: 5000, max_reject_rate: 1.0}
sources:
  files: {type: onec_flat, dir: data}
targets:
  crm: {type: bitrix24, webhook: "%(url)s", limits: %(limits)s%(extra)s}
target: crm
pipelines: [contacts]
"""

PIPELINE = """\
entity: contact
source: {use: files, files: contacts.csv}
key: Код
mapping:
  last_name: Фамилия
  name: Имя
  second_name: Отчество
  post: Должность
  phone: Телефоны
  email: ЭлПочта
target_options:
  responsible: {lookup: false}
  historical_dates: false
"""

LAST = ["Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков", "Фёдоров"]
FIRST = ["Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл", "Михаил"]
MIDDLE = ["Александрович", "Дмитриевич", "Сергеевич", "Андреевич", "Игоревич"]
POSTS = ["Менеджер", "Бухгалтер", "Директор", "Инженер", "Логист"]


def write_contacts(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("Код;Фамилия;Имя;Отчество;Должность;Телефоны;ЭлПочта\r\n")
        for i in range(1, n + 1):
            phones = f"+7 9{rng.randint(10, 99)} {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
            phones += f"; 8-800-{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
            fh.write(f"{i:09d};{rng.choice(LAST)};{rng.choice(FIRST)};{rng.choice(MIDDLE)};{rng.choice(POSTS)};"
                     f"\"{phones}\";contact{i}@example.test\r\n")


def scenario(name: str, records: int, op_cost_ms: float, work: Path) -> dict:
    limits = "cloud" if name == "cloud" else "off"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    sb = subprocess.Popen([sys.executable, "-c", SANDBOX, limits, str(op_cost_ms if limits == "cloud" else 0)],
                          cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = sb.stdout.readline().strip()
        proj = work / name
        shutil.rmtree(proj, ignore_errors=True)
        (proj / "pipelines").mkdir(parents=True)
        (proj / "data").mkdir()
        write_contacts(proj / "data" / "contacts.csv", records)
        extra = "" if limits == "cloud" else ", max_in_flight: 4"
        (proj / "pipelines.yaml").write_text(PROJECT % {"url": url, "limits": limits, "extra": extra},
                                             encoding="utf-8")
        (proj / "pipelines" / "contacts.yaml").write_text(PIPELINE, encoding="utf-8")
        report = proj / "report.json"
        etl = shutil.which("etl")
        cmd = ([etl] if etl else [sys.executable, str(REPO / "cli.py")]) + ["run", "-q", "--report", str(report)]
        t0 = time.perf_counter()
        run = subprocess.Popen(cmd, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, rusage = os.wait4(run.pid, 0)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        if rc not in (0, 1):
            raise SystemExit(f"etl run failed ({rc}):\n{run.stderr.read()[-3000:]}")
        rep = json.loads(report.read_text(encoding="utf-8"))["pipelines"][0]
        sb.stdin.write("stats\n")
        sb.stdin.flush()
        stats = json.loads(sb.stdout.readline())
        sb_rss = _peak_rss(sb.pid)
    finally:
        try:
            sb.stdin.write("quit\n")
            sb.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        try:
            sb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sb.kill()
    out = {"scenario": name, "records": records, "created": rep["created"], "rejected": rep["rejected"],
           "seconds": wall, "engine_seconds": rep["seconds"], "rss_mib": rusage.ru_maxrss / 1024,
           "sandbox_rss_mib": sb_rss, "requests": stats["requests"], "http_503": stats["http_503"],
           "http_429": stats["http_429"], "command_errors": stats["command_errors"],
           "batches": stats["by_method"].get("batch", 0)}
    if limits == "cloud":
        batch_requests = math.ceil(records / 50)
        ceiling_s = max(0.0, (batch_requests - 50) / 2.0)  # burst at once, then 2 per second
        operating = records * op_cost_ms / 1000.0
        out.update(ceiling_seconds=ceiling_s, ceiling_rps=records / ceiling_s if ceiling_s else float("inf"),
                   operating_floor_s=operating)
    return out


def _peak_rss(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--op-cost-ms", type=float, default=5.0, help="simulated server time per command (cloud)")
    ap.add_argument("--only", choices=["cloud", "off"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="b24bench-"))
    try:
        for name in ([args.only] if args.only else ["cloud", "off"]):
            r = scenario(name, args.records, args.op_cost_ms, work)
            rps = r["created"] / r["engine_seconds"]
            print(f"({'a' if name == 'cloud' else 'b'}) {name:5s}: {r['created']:,} contacts created in "
                  f"{r['engine_seconds']:.1f} s (etl run {r['seconds']:.1f} s with start-up) = {rps:,.0f} records/s; "
                  f"{r['requests']} requests ({r['batches']} batches); 503: {r['http_503']}, 429: {r['http_429']}, "
                  f"command errors: {r['command_errors'] or 0}; peak RSS etl {r['rss_mib']:.0f} MiB, "
                  f"sandbox {r['sandbox_rss_mib'] or 0:.0f} MiB")
            if name == "cloud":
                frac = r["ceiling_seconds"] / r["engine_seconds"]
                print(f"          ceiling under cloud limits: {r['ceiling_rps']:,.1f} records/s "
                      f"({math.ceil(args.records / 50)} batch requests: 50 at once, then 2/s = "
                      f"{r['ceiling_seconds']:.1f} s; steady state 100 records/s); achieved {frac:.3f} of it; "
                      f"operating billed >= {r['operating_floor_s']:.0f} s of the 480 s budget")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
