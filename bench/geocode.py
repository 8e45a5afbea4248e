"""How fast the dadata_address stage goes: rows/s when every address is in the cache (the second run of a cutover,
every nightly sync), and requests/s for the paid misses at DaData's limit, through the local fake over real HTTP.

    python bench/geocode.py [--rows 200000] [--distinct 20000] [--misses 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from etl.config import ProjectConfig  # noqa: E402
from etl.sample.address import make_address  # noqa: E402
from etl.stages import ROW, StageContext  # noqa: E402
from etl.stages.geocode import DadataAddress  # noqa: E402
from connectors.dadata import DadataCache, normalise_one  # noqa: E402
from tests.fakes import FakeDadata, standardise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--distinct", type=int, default=20_000)
    ap.add_argument("--misses", type=int, default=200, help="paid requests to time at DaData's 20 req/s")
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()

    rng = random.Random(1)
    pool = list(dict.fromkeys(make_address(rng)[0] for _ in range(args.distinct)))
    column = [rng.choice(pool) for _ in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp, FakeDadata(rps=10_000) as fake:
        engine = sa.create_engine(f"sqlite:///{tmp}/state.db")

        def stage(rps: float) -> DadataAddress:
            cfg = ProjectConfig.model_validate({"dadata": {"api_key": fake.api_key, "secret": fake.secret,
                                                           "base_url": fake.url, "requests_per_second": rps}})
            return DadataAddress({"column": "Адрес"}, StageContext("bench", state_engine=engine, settings=cfg))

        # fill the cache directly with the fake's answers (setup, not measured: no HTTP)
        t0 = time.perf_counter()
        answers = {normalise_one(a): standardise(a) for a in pool}
        DadataCache(engine).put_many(answers)
        print(f"filled the cache with {len(answers):,} answers in {time.perf_counter() - t0:.1f} s")

        # the cached path: every row from the cache, zero requests
        for rnd in ("first batches (cache queries)", "again in the same run (in-run memo)"):
            st = stage(20) if rnd.startswith("first") else st
            t0 = time.perf_counter()
            for i in range(0, len(column), args.batch):
                part = column[i:i + args.batch]
                st.process(pa.table({"Адрес": part, ROW: pa.array(range(len(part)), pa.int64())}))
            dt = time.perf_counter() - t0
            assert fake.requests == 0
            print(f"cached, {rnd}: {len(column):,} rows ({len(answers):,} distinct) in {dt:.2f} s = "
                  f"{len(column) / dt:,.0f} rows/s, 0 requests")
        st.close()

        # the paid path at DaData's limits (20 req/s, 4 workers, keep-alive)
        fresh = [f"Москва, Ленина {i}, кв {i % 300 + 1}" for i in range(1, args.misses + 1)]
        conns = fake.connections
        st = stage(20)
        t0 = time.perf_counter()
        st.process(pa.table({"Адрес": fresh, ROW: pa.array(range(len(fresh)), pa.int64())}))
        dt = time.perf_counter() - t0
        st.close()
        print(f"paid: {len(fresh)} requests in {dt:.1f} s = {len(fresh) / dt:.1f} req/s (limit 20, spaced at 95%), "
              f"{fake.connections - conns} new connection(s), {fake.statuses[429]} answers 429")
        engine.dispose()


if __name__ == "__main__":
    main()
