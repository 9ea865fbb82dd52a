"""Delivers the outbox: per-channel rate limits, retry_after, backoff; never blocks intake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
from sqlalchemy import String, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import error as telegram_error

from backend.crypto import DataKeyError, keys
from backend.logs import request_id
from backend.metrics import OUTBOX_SENT, SEND_FAILURE_REASONS, SEND_FAILURES
from backend.models import OutboxMessage, utcnow
from backend.services.presence import Presence
from backend.services.privacy import CANCELLED, forget_handled
from backend.services.quiet import Quiet
from bot.tasks import cancel
from handlers.events import ERASE_AFTER_SEND, Capabilities, Outgoing
from handlers.notices import render_payload

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0


class DeliveryError(Exception):
    """A message could not be delivered this time. `reason` (one of
    SEND_FAILURE_REASONS) says why for the metrics; without it, it is worked out from
    the error (see failure_reason)."""

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        self.reason = reason


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
        """Wait until a send may go, and take its slot then (not before: a sender that
        fell behind must not send what it booked back to back, and a pause holds the
        sends already waiting too)."""
        while True:
            now = self._clock()
            at = max(now, self._next_global)
            if per_chat:
                at = max(at, self._next_chat.get(chat_id, 0.0))
            if at <= now:
                break
            await asyncio.sleep(at - now)
        if per_chat:
            self._next_chat[chat_id] = now + self._chat_gap
        self._next_global = now + self._global_gap
        if len(self._next_chat) > 10_000:
            self._next_chat = {c: t for c, t in self._next_chat.items() if t > now}


@dataclass(frozen=True, slots=True)
class _Row:
    """A claimed outbox row: what sending it needs."""

    id: int
    channel: str
    # The chat's look-up (it names the chat here) and its id, opened to send.
    chat_key: str
    address: str
    payload: dict[str, Any]
    attempts: int
    # The request that made it (see backend.logs): the send's log lines carry it.
    request_id: str | None = None

    @property
    def is_ack(self) -> bool:
        return self.payload.get("type") == "ack"


@dataclass(slots=True)
class _Outcome:
    row: _Row
    error: DeliveryError | None
    message_id: str | None = None
    at: datetime = field(default_factory=utcnow)


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
    """Sends pending outbox rows in order per chat, from any number of processes.

    One process sends for each channel (the duty `outbox:<channel>`, see Presence), so
    the channel's limits hold for all processes together. Each row is leased by the
    sending process for as long as that process lives, and its outcome is recorded as
    soon as the platform answers. A process killed between the platform's answer and
    that record leaves the row to be sent again: at most that one message per chat.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        presence: Presence,
        *,
        max_attempts: int = 8,
        poll_interval: float = 1.0,
        case_base: str = "",
    ) -> None:
        self._sessions = sessions
        self._case_base = case_base
        self._presence = presence
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._senders: dict[str, Sender] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Sends under way, by chat: a chat has at most one.
        self._flying: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Rows claimed whose delivery has not begun: their lease is handed back at stop.
        self._unstarted: set[int] = set()
        self._quiet = Quiet("outbox")

    def add_sender(self, sender: Sender) -> None:
        self._senders[sender.name] = sender
        self._limiters[sender.name] = RateLimiter(sender.rate_global, sender.rate_per_chat)
        # Every series from the start, so that the first failure is an increase.
        OUTBOX_SENT.labels(channel=sender.name)
        for reason in SEND_FAILURE_REASONS:
            SEND_FAILURES.labels(channel=sender.name, reason=reason)
        self._presence.want(duty(sender.name))

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the sends under way (so their outcome is recorded), then stop."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await cancel(self._task)
            self._task = None
        flying = list(self._flying.values())
        if flying:
            _, late = await asyncio.wait(flying, timeout=grace)
            for task in late:
                await cancel(task)
        await self._release_unstarted()
        self._stopping = False

    async def _run(self) -> None:
        while not self._stopping:
            try:
                _, wait = await self._start_due()
                self._quiet.recovered()
            except Exception as exc:
                self._quiet.failed(exc)
                wait = self._poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, self._poll_interval))
            self._wake.clear()

    async def pump(self) -> tuple[int, float]:
        """Send what is due now and wait for the outcomes. Returns (rows tried, seconds
        until something may be due)."""
        started, wait = await self._start_due()
        await asyncio.gather(*started)
        return len(started), wait

    async def _start_due(self) -> tuple[list[asyncio.Task[None]], float]:
        """Claim the due head of each chat that may be sent to now, for the channels this
        process sends, and start sending them."""
        channels = [c for c in self._senders if self._presence.holds(duty(c))]
        if not channels:
            return [], self._poll_interval
        now = utcnow()
        rows, wait = await self._claim(channels, now)
        started = []
        for row in rows:
            task = asyncio.create_task(self._send(row))
            self._flying[(row.channel, row.chat_key)] = task
            started.append(task)
        return started, wait

    async def _claim(self, channels: list[str], now: datetime) -> tuple[list[_Row], float]:
        """Lease the first pending row of each chat that is due, not under way here and
        whose chat may receive now: button answers first, then the oldest. A channel gets
        no more than it can send within about a second, so that a late button answer is
        not queued behind a backlog. Returns the rows and when to look again."""
        heads = (
            select(func.min(OutboxMessage.id))
            .where(OutboxMessage.status == "pending", OutboxMessage.channel.in_(channels))
            .group_by(OutboxMessage.channel, OutboxMessage.chat_key)
        )
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.channel,
                    OutboxMessage.chat_key,
                    type_coerce(OutboxMessage.address, String),
                    type_coerce(OutboxMessage.payload, String),
                    OutboxMessage.attempts,
                    OutboxMessage.next_attempt_at,
                    OutboxMessage.request_id,
                ).where(OutboxMessage.id.in_(heads))
            )
            wait = self._poll_interval
            due: dict[str, list[_Row]] = {}
            ring = keys()
            for row_id, channel, chat_key, address, payload, attempts, next_at, rid in result:
                try:
                    # Opened one by one: a row sealed under a key this process lacks
                    # holds up its own chat only.
                    opened = ring.open(address, "outbox.address") if address else ""
                    content = ring.open_json(payload, "outbox.payload")
                except DataKeyError as exc:
                    self._quiet.failed(exc, "an outbox row cannot be opened")
                    continue
                row = _Row(row_id, channel, chat_key, opened, content, attempts, rid)
                if (channel, chat_key) in self._flying:
                    continue
                later = (next_at - now).total_seconds()
                if not row.is_ack:
                    later = max(later, self._limiters[channel].chat_ready_in(chat_key))
                if later > 0:
                    wait = min(wait, later)
                    continue
                due.setdefault(channel, []).append(row)
            chosen: dict[int, _Row] = {}
            for channel, candidates in due.items():
                room = max(1, int(self._senders[channel].rate_global)) - sum(
                    1 for c, _ in self._flying if c == channel
                )
                candidates.sort(key=lambda r: (not r.is_ack, r.id))
                chosen.update((r.id, r) for r in candidates[: max(0, room)])
            if not chosen:
                return [], wait
            leased = await session.scalars(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id.in_(list(chosen)),
                    OutboxMessage.status == "pending",
                    self._presence.free_for_me(OutboxMessage.lease_owner),
                )
                .values(lease_owner=self._presence.id)
                .returning(OutboxMessage.id)
                .execution_options(synchronize_session=False)
            )
            rows = [chosen[i] for i in sorted(leased)]
        self._unstarted.update(r.id for r in rows)
        return rows, wait

    async def _send(self, row: _Row) -> None:
        # Each send runs in a task of its own: the id is set for this task alone.
        request_id.set(row.request_id)
        try:
            outcome = await self._deliver(row)
            if outcome is not None:
                _count(outcome)
                await self._record(outcome)
        finally:
            self._flying.pop((row.channel, row.chat_key), None)
            self._wake.set()

    async def _deliver(self, row: _Row) -> _Outcome | None:
        sender = self._senders[row.channel]
        limiter = self._limiters[row.channel]
        try:
            message = render_payload(
                row.payload, sender.capabilities.inline_buttons, self._case_base
            )
        except (KeyError, TypeError, ValueError) as exc:
            # A row no sender can read would fail at every poll and hold up its chat.
            log.error(
                "outbox row %d cannot be read (%s); marked failed", row.id, type(exc).__name__
            )
            return _Outcome(row, PermanentError(type(exc).__name__, reason="other"))
        await limiter.acquire(row.chat_key, per_chat=not row.is_ack)
        if not self._presence.holds(duty(row.channel)):
            # The others may count this process dead by now: leave the row to them.
            return None
        self._unstarted.discard(row.id)
        try:
            message_id = await sender.deliver(row.address, message)
        except RetryLater as exc:
            limiter.pause(exc.seconds)
            return _Outcome(row, exc)
        except DeliveryError as exc:
            return _Outcome(row, exc)
        except Exception as exc:
            log.exception("unexpected error delivering outbox row %d", row.id)
            return _Outcome(row, TransientError(type(exc).__name__, reason="other"))
        return _Outcome(row, None, message_id)

    async def _record(self, outcome: _Outcome) -> None:
        """Record a send's outcome at once; while the database fails, keep trying: the
        row stays leased by this process meanwhile, so no one sends it again."""
        row = outcome.row
        values = self._outcome_values(outcome)
        erases = "payload" in values  # the last message to a forgotten chat
        delay = 0.2
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(
                        update(OutboxMessage)
                        # A row erased or withheld while it was being sent stays so.
                        .where(OutboxMessage.id == row.id, OutboxMessage.status.not_in(CANCELLED))
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
                    if erases:
                        # It is out (or never will be): the chat's updates up to the
                        # erasure, which dated its reply window, go too.
                        mark = row.payload[ERASE_AFTER_SEND]
                        await session.execute(
                            forget_handled(
                                row.channel,
                                row.chat_key,
                                through=mark.get("update"),
                                until=datetime.fromisoformat(mark["at"]),
                            )
                        )
                self._quiet.recovered()
                return
            except Exception as exc:
                self._quiet.failed(exc, "could not record a send")
                if self._stopping and delay > 2:
                    log.error("outbox row %d: its outcome is not recorded", outcome.row.id)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _outcome_values(self, outcome: _Outcome) -> dict[str, object]:
        row, error, now = outcome.row, outcome.error, outcome.at
        values: dict[str, object] = {"lease_owner": None}
        if error is None:
            values.update(
                status="sent", sent_at=now, last_error=None, sent_message_id=outcome.message_id
            )
            log.info("outbox row %d sent on %s", row.id, row.channel)
        elif isinstance(error, RetryLater):
            # Being told to wait is not a failed attempt.
            values.update(
                next_attempt_at=now + timedelta(seconds=error.seconds), last_error=str(error)
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
                values.update(next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)))
        if row.payload.get(ERASE_AFTER_SEND) and "status" in values:
            values.update(chat_key="", address=None, payload={})
        return values

    async def _release_unstarted(self) -> None:
        """Hand back the leases of rows claimed but never begun, for the next sender."""
        ids = list(self._unstarted)
        self._unstarted.clear()
        if not ids:
            return
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(OutboxMessage)
                    .where(
                        OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self._presence.id
                    )
                    .values(lease_owner=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:
            log.warning("could not hand back %d outbox leases (%s)", len(ids), type(exc).__name__)


def failure_reason(error: DeliveryError) -> str:
    """Why a send failed, as a word of SEND_FAILURE_REASONS: the one the channel gave,
    else read from the error and what it came from (the platform's client error)."""
    if error.reason is not None:
        return error.reason if error.reason in SEND_FAILURE_REASONS else "other"
    if isinstance(error, RetryLater):
        return "retry_after"
    if isinstance(error, Undeliverable):
        return "undeliverable"
    cause = error.__cause__
    status = _status_of(cause)
    if isinstance(cause, telegram_error.Forbidden) or status == 403:
        return "blocked"
    if isinstance(cause, telegram_error.BadRequest) or status == 400:
        return "bad_request"
    if status is not None and 500 <= status < 600:
        return "http_5xx"
    if isinstance(cause, telegram_error.NetworkError):
        # PTB raises NetworkError of its own for an HTTP error status (a 5xx), and from
        # the HTTP client's error (or as TimedOut) when the network failed.
        connection = isinstance(cause, telegram_error.TimedOut) or cause.__cause__ is not None
        return "network" if connection else "http_5xx"
    if isinstance(cause, aiohttp.ClientError | OSError | TimeoutError):
        return "network"
    if str(error).startswith("HTTP 5"):
        return "http_5xx"
    return "other"


def _status_of(cause: BaseException | None) -> int | None:
    """The HTTP status a platform client's error carries (aiohttp's `status`, the Zalo
    Bot client's `code`), if any."""
    for name in ("status", "code"):
        value = getattr(cause, name, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    return None


def _count(outcome: _Outcome) -> None:
    channel = outcome.row.channel
    if outcome.error is None:
        OUTBOX_SENT.labels(channel=channel).inc()
    else:
        SEND_FAILURES.labels(channel=channel, reason=failure_reason(outcome.error)).inc()


def duty(channel: str) -> str:
    """The duty of sending a channel's outbox."""
    return f"outbox:{channel}"
