"""GET /metrics in Prometheus' text format: this process's counters and histograms, and
gauges of the shared database (inbox and outbox depth and oldest age, overdue tickets
per province) read at scrape time; and the timing of the platforms' webhooks.

Who may scrape: Prometheus scrapes each process directly, from the machine itself or
from the private network of the reverse proxies (HOTLINE_TRUSTED_PROXIES). A request
that a proxy relays says whom it is for (X-Forwarded-For and the like) and is refused
even from there: it comes from someone else. Refused is answered as a page that does
not exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.metrics import REGISTRY, WEBHOOK_SECONDS, status_class
from backend.models import InboundEvent, OutboxMessage, Ticket, Ward, utcnow
from backend.services.quiet import Quiet
from backend.services.workflow import overdue_filter

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# How long the database gauges are kept before a scrape reads them again, and how long
# a scrape waits for them: a burst of scrapes costs the database one read.
GAUGES_TTL = 5.0
GAUGES_TIMEOUT = 3.0
# A webhook route's name: webhook:<channel> (the chat runtime names them so).
WEBHOOK_ROUTE = "webhook:"
# Headers by which a proxy says whom a request is for.
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = IPv4Network | IPv6Network


def webhook_route(channel: str) -> str:
    """The route name of a channel's webhook, by which its answers are timed."""
    return WEBHOOK_ROUTE + channel


# --- who may scrape ---------------------------------------------------------------------


def may_scrape(peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network]) -> bool:
    """Whether a request from peer (the connection's address) with these headers may
    read the metrics: a direct request from the loopback or a trusted network."""
    if any(name in headers for name in FORWARDING_HEADERS):
        return False
    try:
        address: IPv4Address | IPv6Address = ip_address((peer or "").split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket, or nothing known: not known to be local
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or any(address in network for network in trusted)


# --- the database's gauges --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue's depth, and how long its first stored item has waited (seconds)."""

    depth: int
    oldest_age: float


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in the shared database: by channel, and overdue tickets by province."""

    inbox: dict[str, Queue] = field(default_factory=dict)
    outbox: dict[str, Queue] = field(default_factory=dict)
    overdue: dict[str, int] = field(default_factory=dict)


async def read_backlog(session: AsyncSession, now: datetime) -> Backlog:
    """Three statements, each over an index: the partial index of waiting updates, the
    outbox's heads index (status, channel, …, id) and the tickets' (state, due_at). The
    oldest item of a queue is its first stored one (the smallest id), read by its key."""
    waiting = (
        select(
            InboundEvent.channel.label("channel"),
            func.count().label("depth"),
            func.min(InboundEvent.id).label("first"),
        )
        .where(InboundEvent.handled_at.is_(None))
        .group_by(InboundEvent.channel)
        .subquery()
    )
    inbox = await session.execute(
        select(waiting.c.channel, waiting.c.depth, InboundEvent.received_at).join(
            InboundEvent, InboundEvent.id == waiting.c.first
        )
    )
    pending = (
        select(
            OutboxMessage.channel.label("channel"),
            func.count().label("depth"),
            func.min(OutboxMessage.id).label("first"),
        )
        .where(OutboxMessage.status == "pending")
        .group_by(OutboxMessage.channel)
        .subquery()
    )
    outbox = await session.execute(
        select(pending.c.channel, pending.c.depth, OutboxMessage.created_at).join(
            OutboxMessage, OutboxMessage.id == pending.c.first
        )
    )
    overdue = await session.execute(
        select(Ward.province_code, func.count())
        .select_from(Ticket)
        .join(Ward, Ward.code == Ticket.ward_code)
        .where(overdue_filter(now))
        .group_by(Ward.province_code)
    )

    def queues(rows: Iterable[tuple[str, int, datetime]]) -> dict[str, Queue]:
        return {
            channel: Queue(depth, max(0.0, (now - first_at).total_seconds()))
            for channel, depth, first_at in rows
        }

    return Backlog(
        inbox=queues(inbox.all()),
        outbox=queues(outbox.all()),
        overdue={province: count for province, count in overdue.all()},
    )


class DatabaseGauges(Collector):
    """The backlog as gauges, read at most once per `ttl` seconds however many scrape.

    A channel or province once seen keeps its series, at 0 when nothing waits, so that
    a queue that drains reads 0 rather than vanishing. hotline_database_up is 0 when the
    last read failed (the backlog gauges are then left out, not reported stale).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float = GAUGES_TTL,
        timeout: float = GAUGES_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._read_at: float | None = None
        self._reading: asyncio.Task[None] | None = None
        self._backlog: Backlog | None = None
        self._inbox_channels: set[str] = set()
        self._outbox_channels: set[str] = set()
        self._provinces: set[str] = set()
        self._quiet = Quiet("metrics")

    async def refresh(self) -> None:
        """Read the backlog unless a read is under way (then wait for it) or fresh."""
        if self._reading is None:
            if self._read_at is not None and self._clock() - self._read_at < self._ttl:
                return
            self._reading = asyncio.create_task(self._read(), name="metrics-backlog")
        # A scrape that gives up does not cancel the read the others wait for.
        await asyncio.shield(self._reading)

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(self._timeout), self._sessions() as session:
                backlog = await read_backlog(session, utcnow())
            self._backlog = backlog
            self._inbox_channels.update(backlog.inbox)
            self._outbox_channels.update(backlog.outbox)
            self._provinces.update(backlog.overdue)
            self._quiet.recovered()
        except Exception as exc:
            self._backlog = None
            self._quiet.failed(exc, "could not read the backlog")
        finally:
            self._read_at = self._clock()
            self._reading = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        backlog = self._backlog
        yield GaugeMetricFamily(
            "hotline_database_up",
            "Whether the last read of the database's gauges worked (1) or not (0).",
            value=1.0 if backlog is not None else 0.0,
        )
        if backlog is None:
            return
        yield from _queue_gauges(
            "hotline_inbox_waiting",
            "Stored updates (and later work) waiting to be handled, by channel.",
            "hotline_inbox_oldest_age_seconds",
            "How long the first stored waiting update has waited, by channel.",
            backlog.inbox,
            self._inbox_channels,
        )
        yield from _queue_gauges(
            "hotline_outbox_pending",
            "Messages waiting to be sent (or retried), by channel.",
            "hotline_outbox_oldest_age_seconds",
            "How long the first stored pending message has waited, by channel.",
            backlog.outbox,
            self._outbox_channels,
        )
        overdue = GaugeMetricFamily(
            "hotline_tickets_overdue",
            "Open tickets past their due time, by province (2-digit code).",
            labels=("province",),
        )
        for province in sorted(self._provinces):
            overdue.add_metric((province,), float(backlog.overdue.get(province, 0)))
        yield overdue


def _queue_gauges(
    depth_name: str,
    depth_help: str,
    age_name: str,
    age_help: str,
    queues: dict[str, Queue],
    seen: set[str],
) -> Iterable[GaugeMetricFamily]:
    depth = GaugeMetricFamily(depth_name, depth_help, labels=("channel",))
    age = GaugeMetricFamily(age_name, age_help, labels=("channel",))
    for channel in sorted(seen):
        queue = queues.get(channel, Queue(0, 0.0))
        depth.add_metric((channel,), float(queue.depth))
        age.add_metric((channel,), queue.oldest_age)
    yield depth
    yield age


# --- the route and the webhook timing ---------------------------------------------------

GAUGES = web.AppKey("metrics_gauges", DatabaseGauges)
TRUSTED = web.AppKey("metrics_trusted", list[Network])


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus' text format, for a direct local or trusted scrape."""
    trusted: list[Network] = request.app[TRUSTED]
    if not may_scrape(request.remote, request.headers, trusted):
        raise web.HTTPNotFound()
    gauges = request.app[GAUGES]
    await gauges.refresh()
    body = generate_latest(REGISTRY) + generate_latest(gauges)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


@web.middleware
async def time_webhooks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe how long each webhook takes to answer, by its route's channel (never its
    path) and status class; 'cancelled' when the platform hung up first."""
    name = request.match_info.route.name
    if name is None or not name.startswith(WEBHOOK_ROUTE):
        return await handler(request)
    channel = name.removeprefix(WEBHOOK_ROUTE)
    started = time.perf_counter()
    status = "5xx"
    try:
        response = await handler(request)
        status = status_class(response.status)
        return response
    except web.HTTPException as exc:
        status = status_class(exc.status)
        raise
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    finally:
        WEBHOOK_SECONDS.labels(channel=channel, status=status).observe(
            time.perf_counter() - started
        )


def mount_metrics(
    app: web.Application,
    sessions: web.AppKey[async_sessionmaker[AsyncSession]],
    trusted: Sequence[Network],
) -> None:
    """Add /metrics and the webhook timing to app; `sessions` is the key under which
    the app keeps its session factory once started."""
    app[TRUSTED] = list(trusted)
    app.middlewares.insert(0, time_webhooks)
    app.router.add_get(METRICS_PATH, metrics)

    async def start(app: web.Application) -> None:
        app[GAUGES] = DatabaseGauges(app[sessions])

    async def stop(app: web.Application) -> None:
        if GAUGES in app:
            await app[GAUGES].close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
