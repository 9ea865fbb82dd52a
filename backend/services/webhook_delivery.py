"""Delivers queued webhook events to partners: at least once, signed afresh at each
attempt, retried with backoff and jitter for a day, from any number of processes.

Each row is leased by the process sending it for as long as that process lives (see
Presence): two processes never send one delivery at once, and a dead process's leases
go to the others. A delivery is marked delivered only once the partner answered 2xx; a
process killed between that answer and the record sends it again (the partner drops the
repeat by its event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.config import Settings
from backend.crypto import DataKeyError
from backend.models import Ticket, Webhook, WebhookDelivery, utcnow
from backend.services.presence import Presence
from backend.services.quiet import Quiet
from backend.services.tickets import is_public
from backend.services.webhooks import WebhookError, address_allowed, check_url, signed_headers

log = logging.getLogger(__name__)

# What is read of a partner's answer at most (its first words are kept for the log).
MAX_READ = 16 * 1024
KEPT_ANSWER = 200
# Backoff after the n-th failed attempt: BASE·2^(n-1) seconds, at most MAX_BACKOFF, of
# which a random part (jitter) so that many deliveries to one partner spread out.
BACKOFF_BASE = 30.0
MAX_BACKOFF = 3600.0
# The longest Retry-After heeded (a partner asking for more is tried again after this).
MAX_RETRY_AFTER = 3600.0
USER_AGENT = "pollution-hotline-webhooks/1"


class AddressRefused(OSError):
    """The partner's name resolved to no address the service may connect to."""


class GuardedResolver(AbstractResolver):
    """Resolves a partner's name at each connection and keeps only the addresses allowed
    (public ones, unless private ones are): a name that points inside the network is
    never connected to, however its DNS changed since registration."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if address_allowed(r["host"], self._allow_private)]
        if not allowed:
            raise AddressRefused(f"{host} resolves to no address allowed")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    event: str
    event_id: str
    body: str
    attempts: int
    created_at: datetime
    url: str
    secret: str
    disabled: bool
    # The ticket was hidden from the public (or joined with a hidden case) since the
    # event was queued: it is not told.
    hidden: bool


# How an attempt ended: delivered; transient (timeout, 5xx, 408, 429, connection: retry
# for the whole window); refused (another 4xx, a redirect, an address not allowed: a few
# tries, then failed); failed (nothing to try: the webhook was disabled).
DELIVERED, TRANSIENT, REFUSED, FAILED = "delivered", "transient", "refused", "failed"


@dataclass(frozen=True, slots=True)
class Attempt:
    kind: str
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


class WebhookWorker:
    """Sends due deliveries, up to `webhook_concurrency` at once in this process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        presence: Presence,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        self._sessions = sessions
        self._presence = presence
        self._settings = settings
        self._clock = clock
        self._jitter = jitter
        self._backoff_base = backoff_base
        self._window = timedelta(hours=settings.webhook_retry_hours)
        self._poll = settings.webhook_poll_interval
        self._room = settings.webhook_concurrency
        self._flying: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._stopping = False
        self._quiet = Quiet("webhooks")

    # --- running -----------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._settings.webhook_allow_private),
                use_dns_cache=False,
                limit=self._room,
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout),
                headers={"User-Agent": USER_AGENT},
                # No proxy from the environment, no cookies kept between partners.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Let the sends under way finish (so their outcome is recorded), then hand back
        the leases of any cut short."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        flying = list(self._flying.values())
        if flying:
            _, late = await asyncio.wait(flying, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._release()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._stopping = False

    async def _run(self) -> None:
        while True:
            try:
                self._start_due(await self._claim())
                self._quiet.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._quiet.failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()

    async def pump(self) -> int:
        """Send what is due now and wait for the outcomes; returns how many were tried."""
        tasks = self._start_due(await self._claim())
        await asyncio.gather(*tasks)
        return len(tasks)

    def _start_due(self, rows: list[int]) -> list[asyncio.Task[None]]:
        tasks = []
        for row_id in rows:
            task = asyncio.create_task(self._send(row_id))
            self._flying[row_id] = task
            tasks.append(task)
        return tasks

    # --- leases ------------------------------------------------------------------------

    async def _claim(self) -> list[int]:
        """Lease due pending deliveries (the oldest due first) up to the room left."""
        room = self._room - len(self._flying)
        if room <= 0 or not self._presence.may_work():
            return []
        now = self._clock()
        free = self._presence.free_for_me(WebhookDelivery.lease_owner)
        due = [
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            free,
        ]
        if self._flying:
            due.append(WebhookDelivery.id.not_in(list(self._flying)))
        async with self._sessions() as session, session.begin():
            candidates = (
                select(WebhookDelivery.id)
                .where(*due)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(room)
            )
            if session.get_bind().dialect.name == "postgresql":
                # Rows another process is leasing this instant are skipped, not waited for.
                candidates = candidates.with_for_update(skip_locked=True)
            # Chosen first, then leased by id: a LIMIT inside the UPDATE's subquery may be
            # run again for each row and lease more than the room.
            chosen = list(await session.scalars(candidates))
            if not chosen:
                return []
            leased = await session.scalars(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(chosen), *due)
                .values(lease_owner=self._presence.id)
                .returning(WebhookDelivery.id)
                .execution_options(synchronize_session=False)
            )
            return sorted(leased)

    async def _release(self) -> None:
        """Hand back this process's leases on deliveries not recorded (a stop)."""
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.lease_owner == self._presence.id,
                        WebhookDelivery.status == "pending",
                    )
                    .values(lease_owner=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:
            log.warning("could not hand back the webhook leases (%s)", type(exc).__name__)

    # --- one delivery ------------------------------------------------------------------

    async def _send(self, row_id: int) -> None:
        try:
            row = await self._load(row_id)
            if row is None:
                return
            attempt = await self.attempt(row)
            if attempt is not None:
                await self._record(row, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An error no attempt classified (a secret that no longer opens after a data
            # key change, a bug): left as it was, the row would be leased again at every
            # poll, never reach the window's end, and hold a place others wait for.
            await self._record_unsent(row_id, exc)
        finally:
            self._flying.pop(row_id, None)
            self._wake.set()

    async def _record_unsent(self, row_id: int, exc: Exception) -> None:
        """Count a delivery that could not even be tried as a transient failure: it backs
        off like one and fails at the window's end. Logged by the error's type (and a data
        key's own explanation), never with the secret or the body."""
        detail = str(exc) if isinstance(exc, DataKeyError) else type(exc).__name__
        error = f"not sent: {detail}"
        mine = [
            WebhookDelivery.id == row_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.lease_owner == self._presence.id,
        ]
        try:
            async with self._sessions() as session, session.begin():
                found = (
                    await session.execute(
                        select(
                            WebhookDelivery.event,
                            WebhookDelivery.attempts,
                            WebhookDelivery.created_at,
                        ).where(*mine)
                    )
                ).first()
                if found is None:
                    return
                event, attempts, created_at = found
                row = _Row(row_id, event, "", "", attempts, created_at, "", "", False, False)
                values = self.outcome(row, Attempt(TRANSIENT, error=error), self._clock())
                await session.execute(
                    update(WebhookDelivery)
                    .where(*mine)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        except Exception as failure:
            self._quiet.failed(failure, "could not record a webhook delivery")
            return
        log.warning(
            "webhook delivery %d (%s) %s after %d attempt(s): %s",
            row_id,
            event,
            "failed" if values.get("status") == "failed" else "not sent, retried later",
            attempts + 1,
            error,
        )

    async def _load(self, row_id: int) -> _Row | None:
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(WebhookDelivery, Webhook)
                    .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                    .where(
                        WebhookDelivery.id == row_id,
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.lease_owner == self._presence.id,
                    )
                )
            ).first()
            if found is None:
                return None
            delivery, webhook = found
            ticket = (
                await session.get(Ticket, delivery.ticket_id)
                if delivery.ticket_id is not None
                else None
            )
            hidden = ticket is not None and not await is_public(session, ticket)
        return _Row(
            id=delivery.id,
            event=delivery.event,
            event_id=delivery.event_id,
            body=delivery.body,
            attempts=delivery.attempts,
            created_at=delivery.created_at,
            url=webhook.url,
            secret=webhook.secret,
            disabled=webhook.disabled_at is not None,
            hidden=hidden,
        )

    async def attempt(self, row: _Row) -> Attempt | None:
        """One signed POST of the body; None when this process may not send now (the
        others may count it dead: the delivery is left to them)."""
        if row.disabled:
            return Attempt(FAILED, error="webhook disabled")
        if row.hidden:
            return Attempt(FAILED, error="case hidden from the public")
        settings = self._settings
        try:
            check_url(
                row.url,
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
            )
        except WebhookError as exc:
            return Attempt(REFUSED, error=f"URL refused: {exc.code}")
        if not self._presence.may_work():
            return None
        # Signed at each attempt with the time of sending, over the body as queued.
        headers = signed_headers(row.secret, int(time.time()), row.event, row.event_id, row.body)
        try:
            async with self._client().post(
                row.url, data=row.body.encode(), headers=headers, allow_redirects=False
            ) as answer:
                status = answer.status
                retry_after = _retry_after(answer.headers.get("Retry-After"))
                said = ""
                # The answer is read, at most MAX_READ of it, and only to show admins its
                # first words: a status seen is the outcome, however the body ends.
                with contextlib.suppress(Exception):
                    said = (await answer.content.read(MAX_READ)).decode("utf-8", "replace")
        except TimeoutError:
            return Attempt(TRANSIENT, error=f"timeout after {settings.webhook_timeout:g} s")
        except aiohttp.ClientError as exc:
            if _refused(exc):
                return Attempt(REFUSED, error="address not allowed")
            return Attempt(TRANSIENT, error=f"connection: {type(exc).__name__}")
        except OSError as exc:
            if _refused(exc):
                return Attempt(REFUSED, error="address not allowed")
            return Attempt(TRANSIENT, error=f"connection: {type(exc).__name__}")
        if 200 <= status < 300:
            return Attempt(DELIVERED, status=status)
        error = f"HTTP {status}" + (f": {_printable(said)}" if said.strip() else "")
        if status in (408, 429) or status >= 500:
            return Attempt(TRANSIENT, status=status, error=error, retry_after=retry_after)
        return Attempt(REFUSED, status=status, error=error)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones: exponential, capped,
        between half and all of it at random."""
        full = min(MAX_BACKOFF, self._backoff_base * 2.0 ** max(0, attempts - 1))
        return full * (0.5 + 0.5 * self._jitter())

    def outcome(self, row: _Row, attempt: Attempt, now: datetime) -> dict[str, object]:
        """The row's new values after an attempt."""
        attempts = row.attempts + 1
        values: dict[str, object] = {
            "lease_owner": None,
            "attempts": attempts,
            "last_status": attempt.status,
            "last_error": attempt.error[:500] if attempt.error else None,
        }
        if attempt.kind == DELIVERED:
            values.update(status="delivered", delivered_at=now)
            return values
        ends = row.created_at + self._window
        given_up = (
            attempt.kind == FAILED
            or (attempt.kind == REFUSED and attempts >= self._settings.webhook_refused_attempts)
            or now >= ends
        )
        if given_up:
            values.update(status="failed")
            return values
        wait = self.backoff(attempts)
        if attempt.retry_after is not None:
            wait = max(wait, attempt.retry_after)
        # The last try is at the window's end, whatever the backoff.
        values.update(next_attempt_at=min(now + timedelta(seconds=wait), ends))
        return values

    async def _record(self, row: _Row, attempt: Attempt) -> None:
        """Record an attempt at once; while the database fails, keep trying (the row stays
        leased by this process meanwhile, so no one sends it again)."""
        now = self._clock()
        values = self.outcome(row, attempt, now)
        where = [WebhookDelivery.id == row.id, WebhookDelivery.status == "pending"]
        if attempt.kind != DELIVERED:
            # A failure counts only while the row is still this process's: one the
            # others took over (this process was thought dead) is theirs to record.
            where.append(WebhookDelivery.lease_owner == self._presence.id)
        delay = 0.2
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(
                        update(WebhookDelivery)
                        .where(*where)
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
                break
            except Exception as exc:
                self._quiet.failed(exc, "could not record a webhook delivery")
                if self._stopping and delay > 2:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        status = values.get("status", "retry")
        if status == "failed":
            log.warning(
                "webhook delivery %d (%s) failed after %d attempt(s): %s",
                row.id,
                row.event,
                row.attempts + 1,
                attempt.error,
            )
        else:
            log.info(
                "webhook delivery %d (%s): %s, HTTP %s",
                row.id,
                row.event,
                status,
                attempt.status,
            )


def _retry_after(value: str | None) -> float | None:
    """A Retry-After of seconds (a date is not heeded), within MAX_RETRY_AFTER."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER)


def _refused(exc: BaseException) -> bool:
    """Whether a connection error came from an address not allowed."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, AddressRefused):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return False


def _printable(text: str) -> str:
    """A partner's answer as one short line for the delivery log."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:KEPT_ANSWER]
