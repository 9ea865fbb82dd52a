"""Runs updates through the dialogue with group commit: persist, then acknowledge.

One writer task per process takes every update that arrived while the previous batch
was committing and handles them all in one transaction. Each submitter is answered only
after its batch is committed, so "persist, then acknowledge" holds while the commit cost
is shared by the whole batch.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Conversation, OutboxMessage, ProcessedUpdate, utcnow
from backend.services.upsert import upsert
from handlers.core import step as dialogue_step
from handlers.events import Ack, Capabilities, ConversationState, Incoming, Reply
from handlers.i18n import pick_language, translate
from handlers.turn import Services, Turn

log = logging.getLogger(__name__)

StepFn = Callable[[Turn, Incoming], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    event: Incoming
    done: asyncio.Future[None]


class Dispatcher:
    """Idempotent, transactional handling of chat updates, in arrival order."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        services: Services,
        capabilities: Mapping[str, Capabilities],
        *,
        on_commit: Callable[[], None] = lambda: None,
        step: StepFn = dialogue_step,
        max_batch: int = 256,
    ) -> None:
        self._sessions = sessions
        self._services = services
        self._capabilities = capabilities
        self._on_commit = on_commit
        self._step = step
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def submit(self, event: Incoming) -> asyncio.Future[None]:
        """Queue an event; the future resolves once its outcome is committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("dispatcher is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(event, done))
        return done

    async def handle(self, event: Incoming) -> None:
        await self.submit(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(RuntimeError("dispatcher stopped"))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(RuntimeError("dispatcher stopped"))
                raise
            except Exception as exc:
                # The database itself is failing: the submitter answers 5xx, the
                # platform redelivers later, and nothing was half-written.
                log.exception("batch of %d updates failed", len(batch))
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)

    async def _process(self, batch: Sequence[_Pending]) -> None:
        try:
            await self._commit([p.event for p in batch])
        except Exception:
            if len(batch) == 1:
                await self._commit_failure(batch[0].event)
            else:
                # One bad update must not sink its neighbours: retry them one by one.
                log.warning("batch of %d failed; retrying updates one by one", len(batch))
                for p in batch:
                    try:
                        await self._commit([p.event])
                    except Exception:
                        await self._commit_failure(p.event)
        self.batches += 1
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self._on_commit()

    async def _commit(self, events: Sequence[Incoming]) -> None:
        async with self._sessions() as session, session.begin():
            await self._apply(session, events)

    async def _apply(self, session: AsyncSession, events: Sequence[Incoming]) -> None:
        # A handful of statements per batch, whatever its size: each round trip to the
        # database costs more than the dialogue logic of one update.
        keys = {(e.channel, e.update_id) for e in events}
        found = await session.execute(
            select(ProcessedUpdate.channel, ProcessedUpdate.update_id).where(
                tuple_(ProcessedUpdate.channel, ProcessedUpdate.update_id).in_(keys)
            )
        )
        seen = {(channel, update_id) for channel, update_id in found}
        states = await self._load_states(session, {(e.channel, e.chat_id) for e in events})
        now = utcnow()
        touched: dict[tuple[str, str], ConversationState] = {}
        outbox: list[dict[str, object]] = []
        processed: list[dict[str, object]] = []
        for event in events:
            key = (event.channel, event.update_id)
            if key in seen:
                continue
            seen.add(key)
            chat = (event.channel, event.chat_id)
            state = states.get(chat) or ConversationState(
                state="idle", language=pick_language(event.language)
            )
            turn = Turn(
                session=session,
                conv=state,
                caps=self._capabilities.get(event.channel, Capabilities()),
                services=self._services,
                channel=event.channel,
                chat_id=event.chat_id,
            )
            await self._step(turn, event)
            states[chat] = touched[chat] = state
            outbox.extend(
                {
                    "channel": event.channel,
                    "chat_id": event.chat_id,
                    "payload": reply.to_payload(),
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for reply in turn.out
            )
            processed.append(
                {"channel": event.channel, "update_id": event.update_id, "processed_at": now}
            )
        if touched:
            rows = [
                {
                    "channel": channel,
                    "chat_id": chat_id,
                    "state": st.state,
                    "data": st.data,
                    "language": st.language,
                    "reporter_id": st.reporter_id,
                    "updated_at": now,
                }
                for (channel, chat_id), st in touched.items()
            ]
            await upsert(session, Conversation, rows, ["channel", "chat_id"])
        if outbox:
            await session.execute(insert(OutboxMessage), outbox)
        if processed:
            await session.execute(insert(ProcessedUpdate), processed)

    @staticmethod
    async def _load_states(
        session: AsyncSession, chats: set[tuple[str, str]]
    ) -> dict[tuple[str, str], ConversationState]:
        query = select(
            Conversation.channel,
            Conversation.chat_id,
            Conversation.state,
            Conversation.language,
            Conversation.data,
            Conversation.reporter_id,
        ).where(tuple_(Conversation.channel, Conversation.chat_id).in_(chats))
        if session.get_bind().dialect.name == "postgresql":
            # Another process may be answering the same chat: take turns per chat.
            query = query.with_for_update()
        return {
            (channel, chat_id): ConversationState(
                state=state, language=language, data=copy.deepcopy(data), reporter_id=reporter_id
            )
            for channel, chat_id, state, language, data, reporter_id in await session.execute(query)
        }

    async def _commit_failure(self, event: Incoming) -> None:
        """Record an update that cannot be handled, and say so, leaving the state as it was."""
        log.exception(
            "update %s/%s could not be handled; state unchanged", event.channel, event.update_id
        )
        try:
            async with self._sessions() as session, session.begin():
                exists = await session.get(ProcessedUpdate, (event.channel, event.update_id))
                if exists is not None:
                    return
                conv = await session.scalar(
                    select(Conversation).where(
                        Conversation.channel == event.channel,
                        Conversation.chat_id == event.chat_id,
                    )
                )
                language = conv.language if conv else pick_language(event.language)
                replies: list[Ack | Reply] = []
                if event.callback_id is not None:
                    replies.append(Ack(event.callback_id))
                replies.append(Reply(text=translate(language, "error.internal")))
                session.add_all(
                    OutboxMessage(
                        channel=event.channel, chat_id=event.chat_id, payload=r.to_payload()
                    )
                    for r in replies
                )
                session.add(ProcessedUpdate(channel=event.channel, update_id=event.update_id))
        except Exception:
            log.exception("could not record the failed update %s", event.update_id)
            raise
