"""Scale-out: webhook intake with 1, 2 and 3 `hotline serve` processes on one PostgreSQL,
and the outbox's global send rate with 1 and 3 processes, in one run.

Intake: a closed loop with requests always in flight, spread round robin over the
processes: IN_FLIGHT in all (as many as Telegram opens to the one webhook URL in front of
the processes), then IN_FLIGHT per process (what the processes can take). Each round
starts CHATS new conversations with /start, then the residents type text in the consent
step. A 200 means
the update is stored (and, in the common case, handled in the same transaction). The
outbox is off meanwhile, so that only intake is measured. Each process count gets a fresh
copy of one database made by `hotline migrate` and `hotline import-units`; rounds go in
turns over the process counts so that all see the same machine, and medians are kept.
The reference is the 1-process figure (goal: >= 1.7x with 2 processes).

Outbox: a backlog of replies to many chats, sent to the Bot API stand-in (in a process of
its own) by whichever process holds the sending duty. Reported: the steady send rate, the
most sends in any one second, and their ratio to Telegram's 30 a second.

PostgreSQL is scripts/pg.sh's throw-away server (fsync off), as for the other benchmarks.
The machine's cores are shared by everything here: the servers, PostgreSQL, the load
generator and the stand-in; the CPU each used is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.crypto import keys  # noqa: E402
from bench.common import pg_dsn  # noqa: E402
from bench.intake import CHATS, IN_FLIGHT, ROUND, update  # noqa: E402
from handlers.events import Reply  # noqa: E402
from tests.scaleout.cluster import Cluster, cpu_seconds, free_port  # noqa: E402
from tests.scaleout.postgres import OwnPostgres  # noqa: E402

TOKEN = "123456:SCALEOUT"
SECRET = "scaleout-secret"
TEMPLATE = "scaleout_bench_template"
TELEGRAM_LIMIT = 30.0


def serve_api(port: int, record: str) -> None:
    """The Bot API stand-in; on SIGTERM it writes the time of each send to `record`."""
    import signal

    from tests.scaleout.standins import TelegramRecorder

    async def main() -> list[float]:
        fake = TelegramRecorder(token=TOKEN, port=port)
        await fake.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await fake.stop()
        return [t for t, _ in fake.served]

    Path(record).write_text(json.dumps(asyncio.run(main())))


def environment(url: str, api: str, workdir: Path, *, outbox: bool) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "HOTLINE_DATA_KEY")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": url,
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_API_URL": api,
        "HOTLINE_TELEGRAM_MODE": "webhook",
        "HOTLINE_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "HOTLINE_NOMINATIM_URL": "",
        "HOTLINE_MEDIA_DIR": str(workdir / "media"),
        "HOTLINE_STATS_DUTY_ENABLED": "false",
        "HOTLINE_OUTBOX_ENABLED": "true" if outbox else "false",
    }


# --- intake ---------------------------------------------------------------------------------


async def closed_loop(urls: list[str], bodies: list[bytes], in_flight: int) -> float:
    """Updates answered 200 per second, with in_flight requests always on their way,
    each to the next process in turn."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    work = iter(enumerate(bodies))
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for n, body in work:
                url = urls[n % len(urls)] + "/telegram/webhook"
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"webhook answered {r.status}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return len(bodies) / (time.perf_counter() - began)


# How many requests are in flight: Telegram's 40 to the one webhook URL in front of the
# processes, or 40 to each process (what the processes can take).
def _in_all(count: int) -> int:
    return IN_FLIGHT


def _per_process(count: int) -> int:
    return IN_FLIGHT * count


MODES: dict[str, Callable[[int], int]] = {
    f"{IN_FLIGHT} in flight in all": _in_all,
    f"{IN_FLIGHT} in flight per process": _per_process,
}


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    servers: float = 0.0
    postgres: float = 0.0
    generator: float = 0.0


async def intake(
    pg: OwnPostgres, api: str, workdir: Path, counts: list[int], n: int, rounds: int
) -> None:
    clusters: dict[int, Cluster] = {}
    try:
        for count in counts:
            url = await pg.copy(TEMPLATE, f"scaleout_bench_{count}")
            (workdir / f"intake-{count}").mkdir()
            env = environment(url, api, workdir, outbox=False)
            clusters[count] = Cluster(workdir / f"intake-{count}", env, n=count)
        # All start now; between their rounds they idle (a beat, a poll a second).
        await asyncio.gather(*(c.start() for c in clusters.values()))
        figures = {(mode, c): Figures() for mode in MODES for c in counts}
        batch = itertools.count()
        for r in range(rounds):
            for mode, in_flight in MODES.items():
                for count in counts:
                    await measure(
                        clusters[count], figures[mode, count], pg, n, in_flight(count), next(batch)
                    )
                shown = "  ".join(f"{c}p {figures[mode, c].rates[-1]:.0f}/s" for c in counts)
                print(f"  round {r + 1}, {mode}: {shown}")
    finally:
        await asyncio.gather(*(c.stop() for c in clusters.values()))
    for mode in MODES:
        print(f"intake, {mode}, {n} updates a round, medians of {rounds} rounds:")
        reference = statistics.median(figures[mode, counts[0]].rates)
        for count in counts:
            f = figures[mode, count]
            rate = statistics.median(f.rates)
            goal = "   (goal >= 1.7)" if count == 2 else ""
            print(
                f"  {count} process{'es' if count > 1 else '  '}: {rate:7.0f} upd/s"
                f"   ratio {rate / reference:.2f}{goal}"
                f"   CPU s a round: servers {f.servers / rounds:.1f},"
                f" PostgreSQL {f.postgres / rounds:.1f}, load generator {f.generator / rounds:.1f}"
            )


async def measure(
    cluster: Cluster, figures: Figures, pg: OwnPostgres, n: int, in_flight: int, batch: int
) -> None:
    """One round: new conversations warm up, then n updates are timed."""
    first = batch * ROUND
    warm = [json.dumps(update(first + i)).encode() for i in range(CHATS)]
    await closed_loop(cluster.urls, warm, 16)
    bodies = [json.dumps(update(first + CHATS + i)).encode() for i in range(n)]
    servers = sum(s.cpu_seconds() for s in cluster.servers)
    postgres, generator = postgres_cpu(pg), time.process_time()
    figures.rates.append(await closed_loop(cluster.urls, bodies, in_flight))
    figures.servers += sum(s.cpu_seconds() for s in cluster.servers) - servers
    figures.postgres += postgres_cpu(pg) - postgres
    figures.generator += time.process_time() - generator


# --- outbox ---------------------------------------------------------------------------------


def postgres_cpu(pg: OwnPostgres) -> float:
    pid = pg.pid()
    return cpu_seconds(pid) if pid is not None else 0.0


async def outbox(pg: OwnPostgres, workdir: Path, counts: list[int], backlog: int) -> None:
    """Each process count sends a backlog of `backlog` replies to backlog/5 chats."""
    results: dict[int, tuple[float, int, int]] = {}
    for count in counts:
        api_port = free_port()
        record = workdir / f"sent-{count}.json"
        api = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve-api", str(api_port), str(record)
        )
        await asyncio.sleep(1.5)
        url = await pg.copy(TEMPLATE, f"scaleout_bench_outbox_{count}")
        await enqueue(url, backlog)
        env = environment(url, f"http://127.0.0.1:{api_port}", workdir, outbox=True)
        cluster = Cluster(workdir / f"outbox-{count}", env, n=count)
        (workdir / f"outbox-{count}").mkdir()
        try:
            await cluster.start()
            await wait_sent(url, backlog)
        finally:
            await cluster.stop()
            api.terminate()
            await api.wait()
        times = sorted(json.loads(record.read_text()))
        # The steady part: without the first and last few seconds' worth.
        edge = int(TELEGRAM_LIMIT * 3)
        steady = times[edge:-edge]
        rate = (len(steady) - 1) / (steady[-1] - steady[0])
        results[count] = (rate, most_in_a_second(times), most_in_a_second(steady))
    print(f"outbox, a backlog of {backlog} replies to {backlog // 5} chats:")
    reference = results[counts[0]][0]
    for count in counts:
        rate, most, most_steady = results[count]
        print(
            f"  {count} process{'es' if count > 1 else '  '}: {rate:6.1f} sends/s"
            f"   ratio to 1 process {rate / reference:.2f}"
            f"   ratio to Telegram's {TELEGRAM_LIMIT:g}/s {rate / TELEGRAM_LIMIT:.2f}"
            f"   most in one second {most} (steady part {most_steady})"
        )


async def enqueue(url: str, backlog: int) -> None:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        chats = backlog // 5
        ring = keys()  # the run's key (bench.common), which the servers have too
        rows = [
            (
                "telegram",
                ring.chat_key("telegram", chat),
                ring.seal(chat, "outbox.address"),
                ring.seal_json(Reply(f"#{n}").to_payload(), "outbox.payload"),
            )
            for n in range(backlog)
            if (chat := str(100_000 + n % chats))
        ]
        await conn.executemany(
            "INSERT INTO outbox (channel, chat_key, address, payload, status, attempts,"
            " next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, now(), now())",
            rows,
        )
    finally:
        await conn.close()


async def wait_sent(url: str, backlog: int) -> None:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        deadline = time.monotonic() + backlog / TELEGRAM_LIMIT * 3 + 60
        while time.monotonic() < deadline:
            left = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'")
            if left == 0:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{left} replies still pending")
    finally:
        await conn.close()


def most_in_a_second(times: list[float]) -> int:
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


# --- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> None:
    print(f"{os.cpu_count()} cores for the servers, PostgreSQL and the load generator alike")
    pg = OwnPostgres(free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    try:
        took = await pg.build_template(TEMPLATE)
        print(f"template database (hotline migrate, import-units): {took:.1f} s")
        if not args.outbox_only:
            api_port = free_port()
            api = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--serve-api", str(api_port), os.devnull
            )
            try:
                await asyncio.sleep(1.5)
                api_url = f"http://127.0.0.1:{api_port}"
                await intake(pg, api_url, workdir, [1, 2, 3], args.n, args.rounds)
            finally:
                api.terminate()
                await api.wait()
        await outbox(pg, workdir, [1, 3], args.backlog)
    finally:
        await asyncio.to_thread(pg.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-api", nargs=2, metavar=("PORT", "RECORD"))
    parser.add_argument("-n", type=int, default=3000, help="updates a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=900, help="replies for the outbox")
    parser.add_argument("--logs", help="keep the servers' logs in this (new) directory")
    parser.add_argument("--outbox-only", action="store_true", help="skip the intake part")
    args = parser.parse_args()
    if args.serve_api:
        serve_api(int(args.serve_api[0]), args.serve_api[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.logs or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, workdir))


if __name__ == "__main__":
    main()
