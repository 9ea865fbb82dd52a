"""Webhook intake (update → state persisted → 200) against a bare aiohttp 200 handler.

Both servers run in their own process on 127.0.0.1 and face the same load generator in
this process. Throughput is a closed loop with as many requests in flight as Telegram
opens connections to a webhook (40), run in alternating rounds on the two servers and
reported as medians; latency is an open loop at a fixed rate. Each round starts 500 new
conversations with /start, then the residents type text in the consent step. The intake
server uses SQLite with WAL and synchronous=FULL; its outbox worker is off so that only
intake is measured. A third server, the same intake with sealing replaced by
pass-throughs, gives the cost of encryption at rest in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common, when run as a script

import bench.common  # noqa: E402, F401 - the run's data key

TOKEN = "123456:BENCH"
SECRET = "bench-secret"
CHATS = 500
# Telegram opens up to 40 connections to a webhook unless told otherwise (max_connections).
IN_FLIGHT = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


ROUND = 100_000  # update ids per round: each round starts CHATS new conversations


def update(n: int) -> dict[str, Any]:
    """Update n: the first CHATS of a round say /start, the rest text in the consent step."""
    chat = 10_000 + (n // ROUND) * CHATS + n % CHATS
    text = "/start" if n % ROUND < CHATS else f"tin nhắn {n}"
    return {
        "update_id": n + 1,
        "message": {
            "message_id": n + 1,
            "date": 1_790_000_000,
            "chat": {"id": chat, "type": "private", "first_name": "B"},
            "from": {"id": chat, "is_bot": False, "first_name": "B", "language_code": "vi"},
            "text": text,
        },
    }


# --- servers (run as subprocesses) --------------------------------------------------------


def serve_bare(port: int) -> None:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/telegram/webhook", ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def pass_through_sealing() -> None:
    """The reference for the cost of encryption at rest: the same service with sealing,
    opening and keyed look-ups replaced by pass-throughs (this process only; what
    `hotline migrate` sealed still opens)."""
    from backend import crypto

    real_open = crypto.Keyring.open

    def open_plain(self: crypto.Keyring, token: str, purpose: str) -> str:
        kid, _, rest = token.partition(".")
        return rest if kid == "plain" else real_open(self, token, purpose)

    setattr(crypto.Keyring, "seal", lambda self, plain, purpose: f"plain.{plain}")  # noqa: B010
    setattr(crypto.Keyring, "open", open_plain)  # noqa: B010
    setattr(crypto.Keyring, "lookup", lambda self, purpose, value: f"{purpose}:{value}")  # noqa: B010


def serve_intake(port: int, db: str, api_port: int, *, sealed: bool = True) -> None:
    from pydantic import SecretStr

    from backend.cli import run_server
    from backend.config import Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        media_dir=Path(db).parent / "media",
        telegram_token=SecretStr(TOKEN),
        telegram_api_url=f"http://127.0.0.1:{api_port}",
        telegram_mode="webhook",
        telegram_webhook_secret=SecretStr(SECRET),
        public_url=f"http://127.0.0.1:{port}",
        outbox_enabled=False,
    )
    if not sealed:
        pass_through_sealing()
    run_server(settings, "127.0.0.1", port, banner=False)


def serve_api(port: int) -> None:
    from tests.fakes.telegram_api import FakeTelegram

    async def main() -> None:
        fake = FakeTelegram(token=TOKEN, port=port)
        await fake.start()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- load generator -----------------------------------------------------------------------


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.post(url, data=b"{}") as r:
                    if r.status in (200, 400, 401):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def closed_loop(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Requests per second with `concurrency` requests always in flight."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    it = iter(bodies)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            for body in it:
                async with session.post(url, data=body, headers=headers) as r:
                    assert r.status == 200, r.status
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - start)


async def open_loop(url: str, bodies: list[bytes], rate: float) -> list[float]:
    """Latencies (ms) of requests sent at a fixed rate, whatever the answers take."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as r:
                assert r.status == 200, r.status
                await r.read()
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def spawn(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """This script as a server; its standard error to log when given (the service's
    access log writes a line a request there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = log.open("wb") if log is not None else None
    return subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=ROOT, stderr=stderr)


async def throughput(url: str, first: int, n: int) -> float:
    bodies = [json.dumps(update(first + i)).encode() for i in range(n)]
    await closed_loop(url, bodies[:200], 16)  # warm-up
    return await closed_loop(url, bodies[200:], IN_FLIGHT)


async def latency(url: str, first: int, rate: float, seconds: float) -> list[float]:
    paced = [json.dumps(update(first + i)).encode() for i in range(int(rate * seconds))]
    return await open_loop(url, paced, rate)


async def run(n: int, rate: float, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        plain_db = str(Path(tmp) / "plain.db")
        env = {**os.environ, "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
        hotline = str(Path(sys.executable).parent / "hotline")
        subprocess.run([hotline, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([hotline, "import-units"], env=env, check=True, capture_output=True)
        shutil.copyfile(db, plain_db)
        api_port, bare_port = free_port(), free_port()
        intake_port, plain_port = free_port(), free_port()
        procs = [
            spawn("--serve-api", str(api_port)),
            spawn("--serve-bare", str(bare_port)),
        ]
        try:
            await asyncio.sleep(1.0)
            log = Path(tmp) / "intake.log"
            procs.append(spawn("--serve-intake", str(intake_port), db, str(api_port), log=log))
            procs.append(
                spawn(
                    "--serve-intake",
                    str(plain_port),
                    plain_db,
                    str(api_port),
                    "--unsealed",
                    log=Path(tmp) / "plain.log",
                )
            )
            bare_url = f"http://127.0.0.1:{bare_port}/telegram/webhook"
            intake_url = f"http://127.0.0.1:{intake_port}/telegram/webhook"
            plain_url = f"http://127.0.0.1:{plain_port}/telegram/webhook"
            for url in (bare_url, intake_url, plain_url):
                await wait_up(url)
            # Rounds alternate between the servers so that all see the same machine;
            # medians keep one noisy round from deciding the figure.
            bare_rps: list[float] = []
            intake_rps: list[float] = []
            plain_rps: list[float] = []
            for r in range(rounds):
                bare_rps.append(await throughput(bare_url, r * ROUND, n))
                intake_rps.append(await throughput(intake_url, r * ROUND, n))
                plain_rps.append(await throughput(plain_url, r * ROUND, n))
            bare_lat = await latency(bare_url, rounds * ROUND, rate, seconds)
            intake_lat = await latency(intake_url, rounds * ROUND, rate, seconds)
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
        logged = sum(1 for line in log.open("rb") if line.startswith(b'{"at"'))
    bare = statistics.median(bare_rps)
    intake, plain = statistics.median(intake_rps), statistics.median(plain_rps)
    print(
        f"{rounds} rounds of {n} updates, {IN_FLIGHT} in flight;"
        f" latency at {rate:g}/s for {seconds:g} s"
    )
    print(
        f"bare aiohttp 200 : {bare:8.0f} req/s   p50 {statistics.median(bare_lat):6.2f} ms"
        f"   p99 {pct(bare_lat, 99):6.2f} ms   (rounds: {_fmt(bare_rps)})"
    )
    print(
        f"webhook intake   : {intake:8.0f} upd/s   p50 {statistics.median(intake_lat):6.2f} ms"
        f"   p99 {pct(intake_lat, 99):6.2f} ms   (rounds: {_fmt(intake_rps)})"
    )
    print(f"intake, unsealed : {plain:8.0f} upd/s   (rounds: {_fmt(plain_rps)})")
    print(
        f"ratio intake/bare: {intake / bare:.2f}  (goal >= 0.5)   p99 goal <= 25 ms at {rate:g}/s"
    )
    print(
        f"encryption at rest: intake/bare {plain / bare:.2f} unsealed, {intake / bare:.2f}"
        f" sealed; sealed/unsealed {intake / plain:.2f}"
    )
    print(f"the intake server wrote {logged} access log lines (as in production)")


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-bare", type=int)
    parser.add_argument("--serve-api", type=int)
    parser.add_argument("--serve-intake", nargs=3, metavar=("PORT", "DB", "API_PORT"))
    parser.add_argument("--unsealed", action="store_true", help="with --serve-intake")
    parser.add_argument("-n", type=int, default=4000, help="updates in the throughput run")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
    elif args.serve_api:
        serve_api(args.serve_api)
    elif args.serve_intake:
        port, db, api_port = args.serve_intake
        serve_intake(int(port), db, int(api_port), sealed=not args.unsealed)
    else:
        asyncio.run(run(args.n, args.rate, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
