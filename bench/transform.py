"""Rows/s and peak RSS of crm-etl reading a generated 1C contacts export into Parquet, beside a bare pyarrow read.

    python bench/transform.py [--rows 1000000] [--repeat 3] [--batch-size 20000]

Both sides run in their own child process (peak RSS per child from wait4), on the same cp1251 ';' file, in the
same run; the figures are medians over --repeat runs. crm-etl does the whole job: decode, parse, 1C value types,
key, mapping, content hash, crosswalk and checkpoint in the SQLite state store after every batch, Parquet out.
The bare side is pyarrow.csv.read_csv + pyarrow.parquet.write_table: the floor, with no typing or state.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"

PROJECT = """\
version: 1
name: bench
state: {url: "sqlite:///.etl/state.db"}
defaults: {batch_size: %(batch)d, max_reject_rate: 1.0}
targets:
  staging: {type: parquet, path: out}
target: staging
pipelines: [contacts]
"""

PIPELINE = """\
entity: contact
source:
  type: onec_flat
  files: %(file)s
  types: {ДатаРождения: date, ДатаСоздания: datetime}
key: Код
mapping:
  full_name: ФИО
  name: ФИО
  post: Должность
  phone: Телефон
  email: ЭлПочта
  birthdate: ДатаРождения
  responsible_name: Ответственный
  created_at: ДатаСоздания
  comments: Комментарий
"""

BARE = textwrap.dedent("""\
    import sys, pyarrow.csv as pc, pyarrow.parquet as pq
    t = pc.read_csv(sys.argv[1], read_options=pc.ReadOptions(encoding="cp1251"),
                    parse_options=pc.ParseOptions(delimiter=";", newlines_in_values=True))
    pq.write_table(t, sys.argv[2])
    print(t.num_rows)
""")


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, stdout of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, rusage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=20_000)
    args = ap.parse_args()

    sys.path.insert(0, str(HERE.parent))
    from etl.sample import write_contacts_csv

    WORK.mkdir(exist_ok=True)
    data = WORK / f"contacts-{args.rows}.csv"
    if not data.exists():
        t0 = time.perf_counter()
        write_contacts_csv(data, args.rows, seed=1, encoding="cp1251")
        print(f"generated {args.rows:,} rows ({data.stat().st_size / 2**20:,.0f} MiB) in "
              f"{time.perf_counter() - t0:,.1f} s")
    size_mib = data.stat().st_size / 2**20
    etl = shutil.which("etl")
    etl_cmd = [etl] if etl else [sys.executable, str(HERE.parent / "cli.py")]

    bare, ours = [], []
    for i in range(args.repeat):
        wall, rss, out = measure([sys.executable, "-c", BARE, str(data), str(WORK / "bare.parquet")], WORK)
        bare.append((wall, rss))
        proj = WORK / "project"
        shutil.rmtree(proj, ignore_errors=True)
        (proj / "pipelines").mkdir(parents=True)
        (proj / "pipelines.yaml").write_text(PROJECT % {"batch": args.batch_size}, encoding="utf-8")
        (proj / "pipelines" / "contacts.yaml").write_text(PIPELINE % {"file": data}, encoding="utf-8")
        wall, rss, out = measure(etl_cmd + ["run", "--quiet"], proj)
        ours.append((wall, rss))
        print(f"run {i + 1}: pyarrow {bare[-1][0]:.2f} s {bare[-1][1]:.0f} MiB | crm-etl {wall:.2f} s {rss:.0f} MiB")

    import pyarrow.parquet as pq

    loaded = pq.read_table(WORK / "project" / "out" / "contacts", columns=["source_id"]).num_rows
    b_wall = statistics.median(w for w, _ in bare)
    o_wall = statistics.median(w for w, _ in ours)
    print()
    print(f"input: {args.rows:,} rows, {size_mib:,.0f} MiB cp1251 CSV; crm-etl loaded {loaded:,} distinct keys "
          f"(the rest are the generator's duplicate keys and bad dates, in the dead letters)")
    print(f"bare pyarrow read+write : {args.rows / b_wall:>10,.0f} rows/s  median {b_wall:6.2f} s  "
          f"peak RSS {statistics.median(r for _, r in bare):6.0f} MiB")
    print(f"crm-etl run -> Parquet  : {args.rows / o_wall:>10,.0f} rows/s  median {o_wall:6.2f} s  "
          f"peak RSS {statistics.median(r for _, r in ours):6.0f} MiB")
    print(f"ratio crm-etl / pyarrow : {b_wall / o_wall:.2f} of pyarrow's speed ({o_wall / b_wall:.1f}x the time)")


if __name__ == "__main__":
    main()
