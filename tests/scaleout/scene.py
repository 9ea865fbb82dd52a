"""One run of the scale-out test: a fresh database on the test's own PostgreSQL, the
platforms' stand-ins, moto for S3, three `hotline serve` processes, and the residents."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from aiobotocore.session import get_session
from pydantic import SecretStr

from backend.config import Settings
from backend.crypto import keys
from tests.e2e.webhooks import TELEGRAM_SECRET_HEADER
from tests.fakes.nominatim import FakeNominatim
from tests.fakes.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.scaleout.cluster import Cluster, Server
from tests.scaleout.platform import Platform
from tests.scaleout.postgres import OwnPostgres
from tests.scaleout.residents import (
    AddressResident,
    Resident,
    TelegramResident,
    ZaloResident,
    address_place,
    photo,
)
from tests.scaleout.standins import TelegramRecorder, ZaloRecorder

# The chats that warm the processes up (one each) before the residents come.
WARM_UP_CHATS = 6900
# Telegram chats are 7000…, Zalo users 8511100000…; every ADDRESS_EVERY-th Telegram
# resident types an address (looked up after the turn) instead of sharing a pin.
TELEGRAM_CHATS = 7000
ADDRESS_EVERY = 10
# How long the platforms' queues may take to empty once every resident is done.
SETTLE = 60.0
# The bucket every run keeps its photos in, each under a prefix of its own (its name).
BUCKET = "hotline-scaleout"


@dataclass
class Scene:
    name: str
    workdir: Path
    pg: OwnPostgres
    database: str
    telegram: TelegramRecorder
    zalo: ZaloRecorder
    nominatim: FakeNominatim
    s3: MotoS3
    cluster: Cluster
    platform: Platform
    residents: list[Resident] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    # Seconds each /healthz took, by server, while the residents were at it.
    health: dict[str, list[float]] = field(default_factory=dict)
    # How late this process's own loop woke (when, seconds late): the stand-ins here
    # stamp what they receive, so a late loop blurs their times by as much.
    lag: list[tuple[float, float]] = field(default_factory=list)
    # The oldest each process's beat was seen to be (seconds), while it ran: a process
    # whose beat is 6 s old is dead to the others.
    beat_age: dict[str, float] = field(default_factory=dict)
    # Seconds each process took over its first photo (see warm_up).
    warm: dict[str, float] = field(default_factory=dict)
    # time.time() - time.monotonic(): to place the logs' wall-clock times.
    wall: float = field(default_factory=lambda: time.time() - time.monotonic())
    _late: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.pg.dsn(self.database)

    def mark(self, what: str) -> float:
        """Note when something happened (monotonic seconds)."""
        self.marks[what] = at = time.monotonic()
        return at

    async def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def duty_holder(self, duty: str) -> Server:
        """The server that holds a duty now (by the pid its beat names)."""
        rows = await self.query(
            "SELECT p.pid FROM duties d JOIN processes p ON p.id = d.owner WHERE d.name = $1",
            duty,
        )
        for row in rows:
            server = self.cluster.by_pid(int(row["pid"]))
            if server is not None:
                return server
        raise AssertionError(f"no live server holds {duty}: {rows}")

    def add_residents(self, telegram: int, zalo: int) -> list[Resident]:
        """Residents on both channels, numbered on from those there are (each number its
        own chat and place)."""
        added: list[Resident] = []
        for n in range(len(self.residents), len(self.residents) + telegram):
            chat = TELEGRAM_CHATS + n
            if n % ADDRESS_EVERY == ADDRESS_EVERY - 1:
                self.nominatim.places.append(address_place(n))
                added.append(AddressResident(n, chat, self.platform, self.telegram))
            else:
                added.append(TelegramResident(n, chat, self.platform, self.telegram))
        for n in range(len(self.residents) + telegram, len(self.residents) + telegram + zalo):
            added.append(ZaloResident(n, f"85111{n:08d}", self.platform, self.zalo))
        self.residents += added
        return added

    def arrive(self, telegram: int, zalo: int) -> None:
        """More residents, who start their reports now (while the load runs)."""
        for resident in self.add_residents(telegram, zalo):
            self._late.append(asyncio.create_task(resident.run()))

    async def warm_up(self) -> None:
        """A photo to each process before the residents come: each starts its photo
        workers on its first photo (seconds of work), as after any start; the residents
        meet processes that have been up a while. How long each took is kept."""
        posted = []
        for n, server in enumerate(self.cluster.servers):
            chat = WARM_UP_CHATS + n
            image = photo(10_000 + n)
            file_id = self.telegram.add_file(image)
            size = {"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 48}
            uid = self.platform.next_update_id()
            update = {
                "update_id": uid,
                "message": {
                    "message_id": uid,
                    "date": int(time.time()),
                    "chat": {"id": chat, "type": "private"},
                    "from": {"id": chat, "is_bot": False, "first_name": "Warm"},
                    "photo": [size],
                },
            }
            began = time.monotonic()
            async with self.platform.http.post(
                f"{server.url}/telegram/webhook",
                json=update,
                headers={TELEGRAM_SECRET_HEADER: self.platform.telegram_secret},
            ) as r:
                assert r.status == 200, f"{server.name} refused the warm-up photo: {r.status}"
            posted.append((server, str(chat), began))
        for server, waiting, began in posted:
            await self.handled(waiting)
            self.warm[server.name] = time.monotonic() - began

    async def handled(self, chat: str, within: float = 60.0) -> None:
        """Wait until the (Telegram) chat's updates are all handled."""
        deadline = time.monotonic() + within
        key = keys().chat_key("telegram", chat)
        sql = "SELECT count(*) FROM inbound_events WHERE chat_key = $1 AND handled_at IS NULL"
        while (await self.query(sql, key))[0][0] or not await self.query(
            "SELECT 1 FROM inbound_events WHERE chat_key = $1", key
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"chat {chat}'s updates not handled within {within:g} s")
            await asyncio.sleep(0.1)

    async def run(
        self, during: Callable[[], Awaitable[None]] | None = None, arrivals: float = 5.0
    ) -> None:
        """Every resident makes a report (they arrive within `arrivals` seconds) while
        `during` disturbs the service; then wait until nothing is left to handle or send."""
        await self.warm_up()
        self.mark("load")

        async def arrive(resident: Resident, delay: float) -> None:
            await asyncio.sleep(delay)
            await resident.run()

        count = len(self.residents)
        tasks = [arrive(r, arrivals * i / max(1, count)) for i, r in enumerate(self.residents)]
        disturbance = asyncio.ensure_future(during()) if during is not None else None
        probe = asyncio.create_task(self._probe_health())
        lag = asyncio.create_task(self._probe_lag())
        beats = asyncio.create_task(self._probe_beats())
        try:
            await asyncio.gather(*tasks)
            if disturbance is not None:
                await disturbance
            await asyncio.gather(*self._late)
            self.mark("residents done")
            await self.settle()
        finally:
            probe.cancel()
            lag.cancel()
            beats.cancel()
            if disturbance is not None and not disturbance.done():
                disturbance.cancel()

    async def _probe_lag(self, every: float = 0.05) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(every)
            now = time.monotonic()
            self.lag.append((now, now - began - every))

    async def _probe_beats(self) -> None:
        """How old each live process's beat is, twice a second (the database's clock
        against the beat's own stamp: one machine, one clock)."""
        sql = "SELECT pid, extract(epoch FROM now() - seen_at) AS age FROM processes"
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.5)
                continue
            try:
                while True:
                    for row in await conn.fetch(sql):
                        server = self.cluster.by_pid(int(row["pid"]))
                        if (
                            server is None
                            or server.proc is None
                            or server.proc.returncode is not None
                        ):
                            continue
                        age = float(row["age"])
                        if age > self.beat_age.get(server.name, 0.0):
                            self.beat_age[server.name] = age
                    await asyncio.sleep(0.5)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.5)  # the database is down: its outage, not theirs
            finally:
                await conn.close()

    async def _probe_health(self) -> None:
        """How long each server takes to answer /healthz: a loop held up shows here."""
        http = self.platform.http

        async def one(server: Server) -> None:
            began = time.monotonic()
            try:
                async with http.get(
                    f"{server.url}/healthz", timeout=aiohttp.ClientTimeout(total=60)
                ) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError):
                return  # down (killed): not a measure of its loop
            self.health.setdefault(server.name, []).append(time.monotonic() - began)

        while True:
            await asyncio.gather(*(one(s) for s in self.cluster.servers))
            await asyncio.sleep(0.5)

    async def settle(self) -> None:
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            rows = await self.query(
                "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending') AS outbox,"
                " (SELECT count(*) FROM inbound_events WHERE handled_at IS NULL) AS inbound"
            )
            if rows[0]["outbox"] == 0 and rows[0]["inbound"] == 0:
                break
            await asyncio.sleep(0.5)
        self.mark("settled")

    async def stored_photos(self) -> set[str]:
        """The names (without the run's prefix) of the objects in its part of the bucket."""
        found: set[str] = set()
        async with get_session().create_client(
            "s3",
            endpoint_url=self.s3.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as client:
            pages = client.get_paginator("list_objects_v2")
            async for page in pages.paginate(Bucket=BUCKET, Prefix=f"{self.name}/"):
                for item in page.get("Contents", []):
                    found.add(item.get("Key", "").removeprefix(f"{self.name}/"))
        return found

    async def sent_at_least(self, count: int, within: float = 600.0) -> None:
        """Wait until the Telegram stand-in has served this many governed calls."""
        deadline = time.monotonic() + within
        while len(self.telegram.served) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.telegram.served)} of {count} calls served")
            await asyncio.sleep(0.05)


def _environment(
    name: str,
    pg: OwnPostgres,
    database: str,
    workdir: Path,
    telegram: TelegramRecorder,
    zalo: ZaloRecorder,
    nominatim: FakeNominatim,
    s3: MotoS3,
) -> dict[str, str]:
    """`hotline serve`'s environment: the platforms and services on their stand-ins,
    otherwise the production defaults (rates, timeouts, poll intervals)."""
    keep = (
        "PATH",
        "PYTHONPATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "HOTLINE_DATA_KEY",
    )
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": pg.url(database),
        "HOTLINE_TELEGRAM_TOKEN": telegram.token,
        "HOTLINE_TELEGRAM_API_URL": telegram.url,
        "HOTLINE_TELEGRAM_MODE": "webhook",
        "HOTLINE_ZALO_OA_APP_ID": zalo.app_id,
        "HOTLINE_ZALO_OA_SECRET_KEY": zalo.oa_secret_key,
        "HOTLINE_ZALO_APP_SECRET": zalo.app_secret,
        "HOTLINE_ZALO_OA_ACCESS_TOKEN": zalo.access_token,
        "HOTLINE_ZALO_OA_REFRESH_TOKEN": zalo.refresh_token,
        "HOTLINE_ZALO_OA_API_URL": zalo.url,
        "HOTLINE_ZALO_OAUTH_URL": zalo.url,
        "HOTLINE_NOMINATIM_URL": nominatim.url,
        # Photos go to the bucket; a folder only for what the store is not used for.
        "HOTLINE_MEDIA_DIR": str(workdir / "media"),
        **{
            f"HOTLINE_{key.upper()}": value.get_secret_value()
            if isinstance(value, SecretStr)
            else str(value)
            for key, value in s3.settings(BUCKET, prefix=name).items()
        },
        # The monthly duty acts on the machine's date: not part of this test.
        "HOTLINE_STATS_DUTY_ENABLED": "false",
    }


@asynccontextmanager
async def scene(
    name: str, pg: OwnPostgres, template: str, s3: MotoS3, workdir: Path
) -> AsyncIterator[Scene]:
    """Everything a run needs, started; stopped (and the database dropped) after."""
    database = f"scaleout_{name}_{uuid.uuid4().hex[:6]}"
    await pg.copy(template, database)
    try:
        async with AsyncExitStack() as stack:
            telegram = TelegramRecorder()
            await telegram.start()
            stack.push_async_callback(telegram.stop)
            zalo = ZaloRecorder()
            await zalo.start()
            stack.push_async_callback(zalo.stop)
            nominatim = FakeNominatim(places=[])
            await nominatim.start()
            stack.push_async_callback(nominatim.stop)
            env = _environment(name, pg, database, workdir, telegram, zalo, nominatim, s3)
            cluster = Cluster(workdir, env)
            stack.push_async_callback(cluster.stop)
            await cluster.start()
            http = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            )
            secret = Settings(telegram_token=SecretStr(telegram.token)).webhook_secret()
            platform = Platform(cluster.urls, http, telegram_secret=secret, oa=zalo)
            yield Scene(
                name, workdir, pg, database, telegram, zalo, nominatim, s3, cluster, platform
            )
    finally:
        # The server may be down (a test that failed during an outage): nothing to drop.
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await pg.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
