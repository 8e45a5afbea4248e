"""Rows/s and peak RSS of crm-etl reading a generated 1C contacts export into Parquet, beside a bare pyarrow read.

    python bench/transform.py [--rows 1000000] [--repeat 3] [--batch-size 20000] [--clean]

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
    ap.add_argument("--clean", action="store_true",
                    help="measure the cleaning stages (name, phone, email) + mapping instead; see clean_main()")
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
    if args.clean:
        clean_main(args, data, size_mib, etl_cmd)
        return

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


# --- --clean: the cleaning stages + mapping, without geocoding ---------------------------------------------------

CLEAN_STAGES = """\
stages:
  - type: name
    columns: [ФИО]
    into: {last: Фамилия, first: Имя, middle: Отчество, gender: Пол, full: ФИО_чисто}
    companies: keep
    on_error: keep
  - {type: phone, columns: [Телефон], on_error: keep, flag: Телефон_проверка}
  - {type: email, columns: [ЭлПочта], on_error: keep, flag: Почта_проверка}
"""

CLEAN_MAPPING = """\
mapping:
  full_name: ФИО_чисто
  last_name: Фамилия
  name: Имя
  second_name: Отчество
  gender: Пол
  post: Должность
  phone: Телефон
  email: ЭлПочта
  birthdate: ДатаРождения
  responsible_name: Ответственный
  created_at: ДатаСоздания
  comments: Комментарий
"""

# In the child: the project's real source (decode, 1C types) feeds the engine's Transformer (key, duplicate keys,
# stages, mapping, content hash) batch by batch; no state store, no sink. Prints the seconds spent reading and the
# seconds (wall and CPU: on a shared machine the CPU figure is the steadier one) spent in clean+map.
CLEAN_CHILD = textwrap.dedent("""\
    import json, sys, time
    from etl.config import load_project
    from etl.factory import build_source
    from etl.transform import Transformer
    project = load_project(sys.argv[1])
    pipeline = project.pipelines["contacts"]
    source = build_source(project, pipeline)
    tr = Transformer(pipeline, lambda p, ids: {})
    rows = loaded = rejected = 0
    read_s = clean_s = clean_cpu = 0.0
    t0 = time.perf_counter()
    it = iter(source.read(None, int(sys.argv[2])))
    while True:
        a = time.perf_counter()
        batch = next(it, None)
        read_s += time.perf_counter() - a
        if batch is None:
            break
        a, c = time.perf_counter(), time.process_time()
        out = tr.transform(batch.table, batch.rejects)
        clean_s += time.perf_counter() - a
        clean_cpu += time.process_time() - c
        rows += batch.table.num_rows + batch.rejects.num_rows
        loaded += out.records.num_rows
        rejected += out.rejects.table().num_rows
    print(json.dumps({"rows": rows, "loaded": loaded, "rejected": rejected, "read_s": read_s, "clean_s": clean_s,
                      "clean_cpu": clean_cpu,
                      "wall": time.perf_counter() - t0}))
""")

BARE_READ = textwrap.dedent("""\
    import sys, pyarrow.csv as pc
    t = pc.read_csv(sys.argv[1], read_options=pc.ReadOptions(encoding="cp1251"),
                    parse_options=pc.ParseOptions(delimiter=";", newlines_in_values=True))
    print(t.num_rows)
""")


def clean_main(args, data: Path, size_mib: float, etl_cmd: list[str]) -> None:
    """Per round, each in its own process: a bare pyarrow.csv.read_csv of the file; the source + clean + map
    in-process (the engine's Transformer, no state, no sink); and `etl run` of the same pipeline end to end
    (state store and Parquet out as well). Medians over --repeat rounds; peak RSS per process."""
    import json

    proj = WORK / "project-clean"
    shutil.rmtree(proj, ignore_errors=True)
    (proj / "pipelines").mkdir(parents=True)
    (proj / "pipelines.yaml").write_text(PROJECT % {"batch": args.batch_size}, encoding="utf-8")
    base = PIPELINE % {"file": data}
    head = base[: base.index("mapping:")]
    (proj / "pipelines" / "contacts.yaml").write_text(head + CLEAN_STAGES + CLEAN_MAPPING, encoding="utf-8")
    env_root = str(HERE.parent)
    bare, inproc, full = [], [], []
    for i in range(args.repeat):
        wall, rss, _ = measure([sys.executable, "-c", BARE_READ, str(data)], WORK)
        bare.append((wall, rss))
        wall, rss, out = measure([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_root!r}); "
                                  + CLEAN_CHILD, str(proj), str(args.batch_size)], WORK)
        stats = json.loads(out.strip().splitlines()[-1])
        inproc.append((wall, rss, stats))
        shutil.rmtree(proj / ".etl", ignore_errors=True)
        shutil.rmtree(proj / "out", ignore_errors=True)
        try:
            wall_full, rss_full, _ = measure(etl_cmd + ["run", "--quiet"], proj)
        except SystemExit as e:  # report the clean+map figures even when the full run breaks
            print(f"etl run failed: {str(e)[-300:]}")
            wall_full, rss_full = float("nan"), float("nan")
        full.append((wall_full, rss_full))
        print(f"run {i + 1}: pyarrow read {bare[-1][0]:.2f} s {bare[-1][1]:.0f} MiB | read+clean+map {wall:.2f} s "
              f"(read {stats['read_s']:.2f} s, clean+map {stats['clean_s']:.2f} s) {rss:.0f} MiB | "
              f"etl run {wall_full:.2f} s {rss_full:.0f} MiB")
    med = statistics.median
    b = med(w for w, _ in bare)
    clean_s = med(s["clean_s"] for _, _, s in inproc)
    read_s = med(s["read_s"] for _, _, s in inproc)
    stream = med(s["read_s"] + s["clean_s"] for _, _, s in inproc)
    rows = inproc[-1][2]["rows"]
    f = med(w for w, _ in full)
    print()
    print(f"input: {rows:,} rows, {size_mib:,.0f} MiB cp1251 CSV; stages name + phone + email, then the mapping "
          f"(no geocoding); {inproc[-1][2]['loaded']:,} records out, {inproc[-1][2]['rejected']:,} rejects")
    print(f"bare pyarrow read            : {rows / b:>10,.0f} rows/s  median {b:6.2f} s  "
          f"peak RSS {med(r for _, r in bare):6.0f} MiB")
    cpu = med(s["clean_cpu"] for _, _, s in inproc)
    print(f"clean+map (stages + mapping) : {rows / clean_s:>10,.0f} rows/s  median {clean_s:6.2f} s  "
          f"(ratio to the bare read: {b / clean_s:.2f}); CPU {cpu:.2f} s = {rows / cpu:,.0f} rows per CPU-second")
    print(f"source read (crm-etl reader) : {rows / read_s:>10,.0f} rows/s  median {read_s:6.2f} s")
    print(f"read+clean+map, streaming    : {rows / stream:>10,.0f} rows/s  median {stream:6.2f} s  "
          f"peak RSS {med(r for _, r, _ in inproc):6.0f} MiB  (ratio to the bare read: {b / stream:.2f})")
    print(f"etl run with the stages      : {rows / f:>10,.0f} rows/s  median {f:6.2f} s  "
          f"peak RSS {med(r for _, r in full):6.0f} MiB  (state store, hash, Parquet out)")


if __name__ == "__main__":
    main()
