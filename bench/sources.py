"""Source throughput: named measurements, each run in a fresh process so that its peak RSS is its own.

    python bench/sources.py                       # all
    python bench/sources.py --only backup_parse --mb 300
    python bench/sources.py --list

Targets (issue 4): backup reader parse >= 30 MB/s, skip >= 300 MB/s, RSS <= 500 MB.
Other helpers add their measurements to MEASUREMENTS (name -> function(args) -> dict of figures).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONTACT_CREATE = (
    b"CREATE TABLE `b_crm_contact` (\n  `ID` int(10) unsigned NOT NULL AUTO_INCREMENT,\n"
    b"  `DATE_CREATE` datetime DEFAULT NULL,\n  `DATE_MODIFY` datetime DEFAULT NULL,\n"
    b"  `CREATED_BY_ID` int(10) unsigned NOT NULL,\n  `MODIFY_BY_ID` int(10) unsigned DEFAULT NULL,\n"
    b"  `ASSIGNED_BY_ID` int(10) unsigned DEFAULT NULL,\n  `OPENED` char(1) DEFAULT 'N',\n"
    b"  `COMPANY_ID` int(10) unsigned DEFAULT NULL,\n  `SOURCE_ID` varchar(50) DEFAULT NULL,\n"
    b"  `SOURCE_DESCRIPTION` text,\n  `FULL_NAME` varchar(255) DEFAULT NULL,\n  `NAME` varchar(50) DEFAULT NULL,\n"
    b"  `LAST_NAME` varchar(50) DEFAULT NULL,\n  `SECOND_NAME` varchar(50) DEFAULT NULL,\n"
    b"  `PHOTO` int(10) unsigned DEFAULT NULL,\n  `POST` varchar(255) DEFAULT NULL,\n  `ADDRESS` text,\n"
    b"  `COMMENTS` text,\n  `LEAD_ID` int(10) unsigned DEFAULT NULL,\n  `EXPORT` char(1) DEFAULT 'N',\n"
    b"  `TYPE_ID` varchar(50) DEFAULT NULL,\n  `BIRTHDATE` date DEFAULT NULL,\n  `HAS_PHONE` char(1) DEFAULT 'N',\n"
    b"  `HAS_EMAIL` char(1) DEFAULT 'N',\n  `OPPORTUNITY` decimal(18,2) DEFAULT NULL,\n  PRIMARY KEY (`ID`)\n"
    b") ENGINE=InnoDB DEFAULT CHARSET=utf8;\n\n"
)
NAMES = ["Иван", "Мария", "Пётр", "Ольга", "Алексей", "Наталья", "O'Brien", "Анна-Мария"]
LAST = ["Иванов", "Петрова", "Сидоров", "Кузнецова", "Смирнов", "Попова", "Д'Артаньян"]
POSTS = ["Генеральный директор", "Главный бухгалтер", "Менеджер по закупкам", None, "Инженер \\\\ ПТО"]
COMMENTS = [None, "Звонил 12.03, просил перезвонить\\r\\nпосле обеда", "VIP клиент; скидка 5%", "",
            "<b>Важно</b>: договор №45/2023 от 01.02.2023\\nподписан", "It\\'s fine"]


def _contact_rows(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        name, last = rnd.choice(NAMES).replace("'", "\\'"), rnd.choice(LAST).replace("'", "\\'")
        post = rnd.choice(POSTS)
        com = rnd.choice(COMMENTS)
        vals = [str(i), "'2023-%02d-%02d 10:%02d:00'" % (rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 59)),
                "'2024-01-15 12:00:00'", "1", "1", str(rnd.randint(1, 40)), "'Y'",
                str(rnd.randint(1, 5000)) if rnd.random() < 0.7 else "NULL", "'WEB'", "NULL",
                f"'{name} {last}'", f"'{name}'", f"'{last}'", "NULL", "NULL",
                "NULL" if post is None else f"'{post}'", "'г. Москва, ул. Тверская, д. 1, кв. 5'",
                "NULL" if com is None else f"'{com}'", "NULL", "'N'", "'CLIENT'",
                "'19%02d-%02d-%02d'" % (rnd.randint(50, 99), rnd.randint(1, 12), rnd.randint(1, 28)),
                "'Y'", "'Y'", "%d.%02d" % (rnd.randint(0, 10**6), rnd.randint(0, 99))]
        out.append(("(" + ", ".join(vals) + ")").encode("utf-8"))
    return b",\n".join(out)


def make_dump(path: Path, table: bytes, mb: int) -> int:
    """A CBackup-style dump of about ``mb`` MB: INSERTs of ~1 MB, one row per line."""
    rows = _contact_rows(2600).split(b",\n")
    stmt_rows = []
    size = 0
    for r in rows:
        stmt_rows.append(r)
        size += len(r) + 2
        if size > 1_000_000:
            break
    body = b"INSERT INTO `" + table + b"` VALUES\n" + b",\n".join(stmt_rows) + b";\n"
    create = CONTACT_CREATE.replace(b"b_crm_contact", table)
    with open(path, "wb") as f:
        f.write(b"-- Started: 2024-05-06 07:08:09\nSET NAMES 'utf8';\n")
        f.write(b"DROP TABLE IF EXISTS `" + table + b"`;\n" + create)
        for _ in range(max(1, mb * 1_000_000 // len(body))):
            f.write(body)
        f.write(b"-- Finished: 2024-05-06 07:09:10")
    return path.stat().st_size


def _tar_gz(sql: Path, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.backup_writer import EMPTY_GZIP, tar_header

    name = f"bitrix/backup/{sql.name}".encode()
    size = sql.stat().st_size
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(out, "wb") as f, open(sql, "rb") as src:
        f.write(EMPTY_GZIP[:3] + b"\x04" + EMPTY_GZIP[4:10] + b"\x0a\x00\x00\x00\x00\x00BX0000" + EMPTY_GZIP[10:])
        f.write(c.compress(tar_header(b"bitrix/.config.php", 0)))
        f.write(c.compress(tar_header(name, size)))
        while data := src.read(1 << 20):
            f.write(c.compress(data))
        f.write(c.compress(b"\x00" * ((-size) % 512)))
        f.write(c.compress(tar_header(b"upload/x.bin", 10) + b"\x00" * 512))
        f.write(c.flush())


def _tar_gz_members(sql: Path, out: Path, member: int = 1 << 20) -> None:
    """Like _tar_gz, but a gzip member per ``member`` bytes, as CBackup appends one per write."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.backup_writer import EMPTY_GZIP, tar_header

    def gz(data: bytes) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()

    name = f"bitrix/backup/{sql.name}".encode()
    size = sql.stat().st_size
    with open(out, "wb") as f, open(sql, "rb") as src:
        f.write(EMPTY_GZIP[:3] + b"\x04" + EMPTY_GZIP[4:10] + b"\x0a\x00\x00\x00\x00\x00BX0000" + EMPTY_GZIP[10:])
        f.write(gz(tar_header(b"bitrix/.config.php", 0) + tar_header(name, size)))
        while data := src.read(member):
            f.write(gz(data))
        f.write(gz(b"\x00" * ((-size) % 512) + tar_header(b"upload/x.bin", 10) + b"\x00" * 512))


def _read(path: Path, want: set[str], typed: bool) -> tuple[int, int]:
    from connectors.bitrix24.backup.archive import BackupDump
    from connectors.bitrix24.backup.dump import DumpReader, Rows, typed_table

    dump = BackupDump(path)
    reader = DumpReader(dump.chunks(), want)
    rows = 0
    for ev in reader.events():
        if isinstance(ev, Rows):
            if typed:
                typed_table(reader.schemas[ev.table], ev.columns, reader.codec)
            rows += ev.count
    return rows, dump.sql_done


def _measure(fn, args) -> dict:
    t = time.perf_counter()
    out = fn(args)
    out["seconds"] = round(time.perf_counter() - t, 2)
    if "bytes" in out:
        out["MB/s"] = round(out["bytes"] / 1e6 / out["seconds"], 1)
    return out


def backup_parse(args) -> dict:
    """The selected table's INSERT rows parsed and typed into Arrow (plain .sql)."""
    d = Path(args.dir)
    sql = d / "parse.sql"
    if not sql.exists():
        make_dump(sql, b"b_crm_contact", args.mb)
    t = time.perf_counter()
    rows, done = _read(sql, {"b_crm_contact"}, True)
    sec = time.perf_counter() - t
    return {"bytes": done, "rows": rows, "rows/s": round(rows / sec), "seconds": round(sec, 2),
            "MB/s": round(done / 1e6 / sec, 1), "target": ">= 30 MB/s"}


def _skip_dump(args) -> Path:
    """The dump of a table nobody asks for, 3x --mb (made once in --dir)."""
    sql = Path(args.dir) / "skip.sql"
    if not sql.exists():
        make_dump(sql, b"b_blog_post", args.mb * 3)
    return sql


def backup_skip_sql(args) -> dict:
    """Tables nobody asked for, skipped (plain .sql)."""
    sql = _skip_dump(args)
    t = time.perf_counter()
    _, done = _read(sql, set(), False)
    sec = time.perf_counter() - t
    return {"bytes": done, "seconds": round(sec, 2), "MB/s": round(done / 1e6 / sec, 1), "target": ">= 300 MB/s"}


def backup_skip_targz(args) -> dict:
    """The same, out of a .tar.gz archive (inflating included)."""
    sql = _skip_dump(args)
    arc = sql.with_name("skip.tar.gz")
    if not arc.exists():
        _tar_gz(sql, arc)
    t = time.perf_counter()
    _, done = _read(arc, set(), False)
    sec = time.perf_counter() - t
    return {"bytes": done, "seconds": round(sec, 2), "MB/s": round(done / 1e6 / sec, 1),
            "archive MB": round(arc.stat().st_size / 1e6, 1), "target": ">= 300 MB/s (of dump bytes)"}


def backup_seek_targz(args) -> dict:
    """The last tenth of a .tar.gz dump (gzip members every MB): read from the start, and entered at a restart
    point an earlier pass met (a resume, or a pipeline whose table comes late)."""
    from connectors.bitrix24.backup.archive import BackupDump

    sql = _skip_dump(args)
    arc = sql.with_name("seek.tar.gz")
    if not arc.exists():
        _tar_gz_members(sql, arc)
    first = BackupDump(arc)
    total = sum(len(c) for _, c in first.chunks())
    points = first.seek_points()
    start = total - total // 10

    def drain(seek) -> float:
        t = time.perf_counter()
        n = sum(len(c) for _, c in BackupDump(arc).chunks(start, seek))
        assert n == total - start
        return time.perf_counter() - t

    cold, warm = drain(None), drain(points)
    return {"dump MB": round(total / 1e6, 1), "from the start s": round(cold, 2), "from a restart point s":
            round(warm, 3), "speed-up": round(cold / warm, 1), "restart points": len(points)}


# ---------------------------------------------------------------- SQL and CSV sources (rows/s)
BENCH_SCHEMA = "crm_etl_bench"


def _pg_table(url: str, rows: int, indexed_watermark: bool = False) -> str:
    """A contacts table of ``rows`` rows in schema crm_etl_bench, made once by the server (generate_series)."""
    import sqlalchemy as sa

    name = f"contacts_{rows}"
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {BENCH_SCHEMA}"))
        have = c.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{BENCH_SCHEMA}.{name}"}).scalar()
        if have and c.execute(sa.text(f"SELECT count(*) FROM {BENCH_SCHEMA}.{name}")).scalar() != rows:
            c.execute(sa.text(f"DROP TABLE {BENCH_SCHEMA}.{name}"))
            have = False
        if not have:
            c.execute(sa.text(
                f"CREATE TABLE {BENCH_SCHEMA}.{name} (id BIGINT PRIMARY KEY, code TEXT, full_name TEXT, post TEXT, "
                "phone TEXT, email TEXT, birthdate DATE, amount NUMERIC(12,2), updated_at TIMESTAMP)"))
            c.execute(sa.text(
                f"INSERT INTO {BENCH_SCHEMA}.{name} SELECT g, 'К-' || lpad(g::text, 8, '0'), "
                "'Петрова Анна Сергеевна ' || g, 'Менеджер по закупкам', '+7 (912) ' || lpad((g % 9999999)::text, 7, '0'), "
                "'a' || g || '@example.ru', DATE '1960-01-01' + (g % 15000), g * 1.25, "
                "TIMESTAMP '2024-01-01' + (g / 100) * INTERVAL '1 second' FROM generate_series(1, :n) g"), {"n": rows})
            c.execute(sa.text(f"ANALYZE {BENCH_SCHEMA}.{name}"))
        if indexed_watermark:
            c.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {name}_wm ON {BENCH_SCHEMA}.{name} (updated_at, id)"))
    eng.dispose()
    return name


def _sql_read(url: str, table: str, **kw) -> dict:
    from connectors.sql import SqlSource

    src = SqlSource(url, table=table, schema=BENCH_SCHEMA, key="id", **kw)
    t = time.perf_counter()
    rows = 0
    for b in src.read(None, 5000):
        rows += b.table.num_rows
    sec = time.perf_counter() - t
    src.close()
    return {"rows": rows, "seconds": round(sec, 2), "rows/s": round(rows / sec)}


def sql_postgresql(args) -> dict:
    """SqlSource, full mode: a PostgreSQL table in key order, keyset pages streamed 5000 rows a round trip."""
    table = _pg_table(args.pg_url, args.rows)
    return _sql_read(args.pg_url, table)


def sql_postgresql_incremental(args) -> dict:
    """SqlSource, incremental: the same table in (watermark, key) order, with an index on both."""
    table = _pg_table(args.pg_url, args.rows, indexed_watermark=True)
    return _sql_read(args.pg_url, table, watermark="updated_at")


def sql_postgresql_odbc(args) -> dict:
    """SqlSource, full mode, through pyodbc + unixODBC + psqlODBC (the mssql+pyodbc code path)."""
    from urllib.parse import quote_plus

    import sqlalchemy as sa

    table = _pg_table(args.pg_url, args.rows)
    u = sa.engine.make_url(args.pg_url)
    odbc = (f"DRIVER={{PostgreSQL Unicode}};Server={u.host};Port={u.port or 5432};Database={u.database};"
            f"UID={u.username}" + (f";PWD={u.password}" if u.password else ""))
    return _sql_read("postgresql+pyodbc:///?odbc_connect=" + quote_plus(odbc), table)


def csv_onec_flat(args) -> dict:
    """FlatFileSource (connectors/onec/flat.py) over a generated 1C contacts export: cp1251, ';', typed dates."""
    from connectors.onec.flat import FlatFileSource
    from etl.sample import write_contacts_csv

    path = Path(args.dir) / f"contacts-{args.rows}.csv"
    if not path.exists():
        write_contacts_csv(path, args.rows, seed=1, encoding="cp1251")
    src = FlatFileSource(path.name, base_dir=path.parent, types={"ДатаРождения": "date", "ДатаСоздания": "datetime"})
    t = time.perf_counter()
    rows = rejects = 0
    for b in src.read(None, 5000):
        rows += b.table.num_rows
        rejects += b.rejects.num_rows
    sec = time.perf_counter() - t
    return {"rows": rows + rejects, "bad-date rejects": rejects, "seconds": round(sec, 2),
            "rows/s": round((rows + rejects) / sec), "MB": round(path.stat().st_size / 1e6, 1)}


MEASUREMENTS = {
    "backup_parse": backup_parse,
    "backup_skip_sql": backup_skip_sql,
    "backup_skip_targz": backup_skip_targz,
    "backup_seek_targz": backup_seek_targz,
    "sql_postgresql": sql_postgresql,
    "sql_postgresql_incremental": sql_postgresql_incremental,
    "sql_postgresql_odbc": sql_postgresql_odbc,
    "csv_onec_flat": csv_onec_flat,
}


def _child(name: str, args, q) -> None:
    # import the readers before any clock starts: a measurement times reading, not Python's imports
    import connectors.bitrix24.backup.archive  # noqa: F401
    import connectors.bitrix24.backup.dump  # noqa: F401
    import connectors.onec.flat  # noqa: F401
    import connectors.sql.source  # noqa: F401

    out = MEASUREMENTS[name](args)
    out["peak RSS MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    q.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of the measurements to run")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--mb", type=int, default=200, help="size of the generated parse dump (skip: 3x)")
    ap.add_argument("--dir", default=None, help="where to keep generated inputs (default: a temp dir)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the SQL table and the CSV file")
    ap.add_argument("--pg-url", default=os.environ.get("ETL_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
                    help="PostgreSQL for the sql_* measurements (the table goes into schema crm_etl_bench)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, each in a fresh process; figures are medians")
    args = ap.parse_args()
    if args.list:
        for name, fn in MEASUREMENTS.items():
            print(f"{name}: {(fn.__doc__ or '').strip()}")
        return
    names = args.only or list(MEASUREMENTS)
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        ap.error(f"unknown measurement(s) {unknown}; --list shows them")
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="etl-bench-")
        args.dir = tmp.name
    os.makedirs(args.dir, exist_ok=True)
    ctx = mp.get_context("spawn")
    for name in names:
        rounds = []
        for _ in range(max(1, args.repeat)):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(name, args, q))
            p.start()
            rounds.append(q.get())
            p.join()
        out = dict(rounds[0])
        for k, v in rounds[0].items():
            if isinstance(v, (int, float)) and len(rounds) > 1:
                out[k] = statistics.median(r[k] for r in rounds)
        rates = [r[k] for r in rounds for k in ("MB/s", "rows/s") if k in r]
        extra = f"  rounds={sorted(rates)}" if len(rounds) > 1 else ""
        print(f"{name:20s} " + "  ".join(f"{k}={v}" for k, v in out.items()) + extra, flush=True)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
