"""Delivers the outbox: per-channel rate limits, retry_after, backoff; never blocks intake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import OutboxMessage, utcnow
from handlers.events import Ack, Capabilities, Outgoing
from handlers.notices import render_payload

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_BACKOFF = 600.0


class DeliveryError(Exception):
    """A message could not be delivered this time."""


class RetryLater(DeliveryError):
    """The platform asked us to wait (HTTP 429 with retry_after)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds:g}s")
        self.seconds = seconds


class TransientError(DeliveryError):
    """A network error or a 5xx: try again with backoff."""


class PermanentError(DeliveryError):
    """The platform refused the message (blocked bot, bad request): do not retry."""


class Undeliverable(PermanentError):
    """The chat cannot be reached now (Zalo OA's reply window has closed): staff phone
    the reporter instead. Kept as "undeliverable" and shown on the ticket page."""


class Sender(Protocol):
    """A channel's outgoing side."""

    name: str
    capabilities: Capabilities
    rate_global: float
    rate_per_chat: float

    async def deliver(self, chat_id: str, message: Outgoing) -> str | None:
        """Send message; the platform's message id when it gives one."""
        ...


class RateLimiter:
    """Spaces sends: at most `rate_global` a second overall and `rate_per_chat` per chat."""

    def __init__(
        self,
        rate_global: float,
        rate_per_chat: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._global_gap = 1.0 / rate_global
        self._chat_gap = 1.0 / rate_per_chat
        self._clock = clock
        self._next_global = 0.0
        self._next_chat: dict[str, float] = {}

    def chat_ready_in(self, chat_id: str) -> float:
        """Seconds until this chat may receive another message."""
        return max(0.0, self._next_chat.get(chat_id, 0.0) - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every send for a while (the platform said we flood it)."""
        self._next_global = max(self._next_global, self._clock() + seconds)

    async def acquire(self, chat_id: str, per_chat: bool = True) -> None:
        now = self._clock()
        at = max(now, self._next_global)
        if per_chat:
            at = max(at, self._next_chat.get(chat_id, 0.0))
            self._next_chat[chat_id] = at + self._chat_gap
        self._next_global = at + self._global_gap
        if len(self._next_chat) > 10_000:
            self._next_chat = {c: t for c, t in self._next_chat.items() if t > now}
        if at > now:
            await asyncio.sleep(at - now)


@dataclass(slots=True)
class _Outcome:
    row_id: int
    error: DeliveryError | None
    message_id: str | None = None


def split_text(text: str, limit: int) -> list[str]:
    """Text in pieces of at most `limit` characters, cut at line ends where possible,
    for platforms that refuse longer messages."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n")
    return [*parts, text]


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff after the n-th failed attempt: 2, 4, 8 … seconds, capped."""
    return float(min(MAX_BACKOFF, 2.0**attempts))


class OutboxWorker:
    """Sends pending outbox rows in order per chat; safe to run in several processes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_attempts: int = 8,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._senders: dict[str, Sender] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def add_sender(self, sender: Sender) -> None:
        self._senders[sender.name] = sender
        self._limiters[sender.name] = RateLimiter(sender.rate_global, sender.rate_per_chat)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the sends under way (so their outcome is recorded), then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._stopping = False

    async def _run(self) -> None:
        while not self._stopping:
            try:
                sent, wait = await self.pump()
            except Exception:
                log.exception("outbox pump failed")
                sent, wait = 0, self._poll_interval
            if sent == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, self._poll_interval))
                self._wake.clear()

    async def pump(self) -> tuple[int, float]:
        """Send what is due now. Returns (rows tried, seconds until something may be due)."""
        now = utcnow()
        rows = await self._claim(now)
        if not rows:
            return 0, self._poll_interval
        outcomes = await asyncio.gather(*(self._send(r) for r in rows))
        await self._record(outcomes, rows)
        return len(rows), 0.0

    async def _claim(self, now: datetime) -> list[OutboxMessage]:
        """Lease the first pending message of each chat that is due and may be sent now."""
        async with self._sessions() as session, session.begin():
            pending = await session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.status == "pending",
                    OutboxMessage.channel.in_(list(self._senders)),
                )
                .order_by(OutboxMessage.id)
                .limit(500)
            )
            heads: dict[tuple[str, str], OutboxMessage] = {}
            for row in pending:
                heads.setdefault((row.channel, row.chat_id), row)
            claimed = []
            for row in heads.values():
                if row.next_attempt_at > now:
                    continue
                if row.lease_until is not None and row.lease_until > now:
                    continue
                is_ack = row.payload.get("type") == "ack"
                if not is_ack and self._limiters[row.channel].chat_ready_in(row.chat_id) > 0:
                    continue
                result = await session.execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.id == row.id,
                        OutboxMessage.status == "pending",
                        or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until <= now),
                    )
                    .values(lease_until=now + LEASE)
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(row)
            return claimed

    async def _send(self, row: OutboxMessage) -> _Outcome:
        sender = self._senders[row.channel]
        limiter = self._limiters[row.channel]
        message = render_payload(row.payload, sender.capabilities.inline_buttons)
        await limiter.acquire(row.chat_id, per_chat=not isinstance(message, Ack))
        try:
            message_id = await sender.deliver(row.chat_id, message)
        except RetryLater as exc:
            limiter.pause(exc.seconds)
            return _Outcome(row.id, exc)
        except DeliveryError as exc:
            return _Outcome(row.id, exc)
        except Exception as exc:
            log.exception("unexpected error delivering outbox row %d", row.id)
            return _Outcome(row.id, TransientError(type(exc).__name__))
        return _Outcome(row.id, None, message_id)

    async def _record(self, outcomes: list[_Outcome], rows: list[OutboxMessage]) -> None:
        by_id = {r.id: r for r in rows}
        now = utcnow()
        async with self._sessions() as session, session.begin():
            for outcome in outcomes:
                row = by_id[outcome.row_id]
                values: dict[str, object] = {"lease_until": None}
                error = outcome.error
                if error is None:
                    values.update(
                        status="sent",
                        sent_at=now,
                        last_error=None,
                        sent_message_id=outcome.message_id,
                    )
                elif isinstance(error, RetryLater):
                    # Being told to wait is not a failed attempt.
                    values.update(
                        next_attempt_at=now + timedelta(seconds=error.seconds),
                        last_error=str(error),
                    )
                else:
                    attempts = row.attempts + 1
                    values.update(attempts=attempts, last_error=str(error)[:500])
                    if isinstance(error, Undeliverable):
                        values.update(status="undeliverable")
                        log.info("outbox row %d is undeliverable: %s", row.id, error)
                    elif isinstance(error, PermanentError) or attempts >= self._max_attempts:
                        values.update(status="failed")
                        log.warning(
                            "outbox row %d failed after %d attempt(s): %s",
                            row.id,
                            attempts,
                            type(error).__name__,
                        )
                    else:
                        delay = backoff_seconds(attempts)
                        values.update(next_attempt_at=now + timedelta(seconds=delay))
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row.id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
