"""Workflow actions lock the ticket: two people, or a person and the deadline worker, acting
on one ticket at once give one change, and the other is told why not. The contenders run
their transactions at once, on engines of their own as separate processes would; most
races start behind another transaction that holds the ticket until every contender waits
for it (PostgreSQL shows the waits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.db import create_engine, session_factory
from backend.models import AuditEvent, Ticket, User
from backend.services.deadlines import Policies
from backend.services.escalation import DeadlineWorker, escalate_overdue
from backend.services.staff_groups import ClaimOutcome, claim_from_card
from backend.services.workflow import (
    Action,
    Actor,
    WorkflowError,
    act,
    apply,
    find_ticket,
    find_visible_ticket,
)
from backend.web.api import TEST_USER_HEADER
from handlers.i18n import translate
from tests.e2e.conftest import running
from tests.e2e.staff_http import Visitor, form_token, staff_account, web_settings
from tests.factories import PHOTO, make_ticket, make_user

POLICIES = Policies.load()
GROUP = "-1001234"
T = TypeVar("T")


@pytest.fixture
async def second_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own, as another server process has."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@asynccontextmanager
async def held(engine: AsyncEngine, ticket_id: int) -> AsyncIterator[None]:
    """Another transaction holds the ticket until the block ends (PostgreSQL: its row
    lock; SQLite: the database's write lock): whoever wants to change it waits behind."""
    async with engine.connect() as conn:
        await conn.begin()
        if conn.dialect.name == "postgresql":
            await conn.execute(select(Ticket.id).where(Ticket.id == ticket_id).with_for_update())
        else:
            await conn.execute(
                update(Ticket).where(Ticket.id == ticket_id).values(updated_at=Ticket.updated_at)
            )
        yield
        await conn.rollback()


async def waiting(engine: AsyncEngine, contenders: Sequence[asyncio.Task[Any]]) -> None:
    """Return once every contender waits for a lock, having read whatever it read first.

    PostgreSQL lists the waits; SQLite waits inside its busy handler, where nothing shows
    it, so the contenders get a generous moment there. Either way none may have finished.
    """
    if engine.dialect.name == "postgresql":
        for _ in range(500):
            async with engine.connect() as conn:
                count = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                )
            if count == len(contenders):
                break
            assert not any(c.done() for c in contenders), [c.result() for c in contenders]
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"{count} of {len(contenders)} contenders wait")
    else:
        await asyncio.sleep(0.5)
    assert not any(c.done() for c in contenders), [c.result() for c in contenders]


def start(work: Awaitable[T]) -> asyncio.Task[T]:
    return asyncio.ensure_future(work)


async def audit(
    sessions: async_sessionmaker[AsyncSession], ticket_id: int
) -> list[tuple[str, str | None, str | None]]:
    """(action, from state, to state) of each event of the ticket's trail, in order."""
    async with sessions() as s:
        rows = await s.execute(
            select(AuditEvent.action, AuditEvent.from_state, AuditEvent.to_state)
            .where(AuditEvent.ticket_id == ticket_id)
            .order_by(AuditEvent.id)
        )
        return [(action, before, after) for action, before, after in rows]


async def assigned_ticket(session: AsyncSession) -> Ticket:
    ticket = await make_ticket(session)
    await act(session, ticket, Action("classify", competence="ward"), Actor.system(), POLICIES)
    assert ticket.state == "assigned"
    return ticket


async def test_two_presses_on_one_card_claim_it_once(
    engine: AsyncEngine,
    second_engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        ticket = await assigned_ticket(s)
        lan = await make_user(s, "ward_staff", "W14812", chat_id="8001")
        minh = await make_user(s, "ward_staff", "W14812", chat_id="8002")

    async def press(factory: async_sessionmaker[AsyncSession], sender: str) -> ClaimOutcome:
        async with factory() as s, s.begin():
            return await claim_from_card(s, "telegram", GROUP, sender, ticket.code, POLICIES)

    async with held(engine, ticket.id):
        presses = [
            start(press(sessions, "8001")),
            start(press(session_factory(second_engine), "8002")),
        ]
        await waiting(engine, presses)
    first, second = await asyncio.gather(*presses)

    assert sorted([first.key, second.key]) == ["card.taken", "card.you_claimed"]
    (winner, lost) = (lan, second) if first.claimed else (minh, first)
    for language in ("vi", "en"):
        told = translate(language, lost.key, **lost.params)
        assert winner.display_name in told and ticket.code in told, told
    async with sessions() as s:
        stored = await s.get(Ticket, ticket.id)
        assert stored is not None
        assert (stored.state, stored.claimed_by) == ("claimed", winner.id)
    assert [e for e in await audit(sessions, ticket.id) if e[0] == "claim"] == [
        ("claim", "assigned", "claimed")
    ]


async def test_a_card_pressed_when_its_report_no_longer_waits(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Nobody claimed it (it joined another case): the card says so, and names no one."""
    async with sessions() as s, s.begin():
        case = await make_ticket(s)
        ticket = await assigned_ticket(s)
        await make_user(s, "ward_staff", "W14812", chat_id="8001")
        merge = Action("merge", case_code=case.code)
        await apply(
            s, ticket, merge, await Actor.of_user(s, await make_user(s, "admin", None)), POLICIES
        )
    async with sessions() as s, s.begin():
        pressed = await claim_from_card(s, "telegram", GROUP, "8001", ticket.code, POLICIES)
    assert (pressed.key, pressed.claimed) == ("card.not_waiting", False)
    told = translate("en", pressed.key, **pressed.params)
    assert told == f"{ticket.code} is no longer waiting to be claimed."


async def test_a_claim_on_the_dashboard_the_api_and_the_card_at_once(
    database_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One claims; the API answers 409, the dashboard says it cannot be done now, and the
    card names who claimed it."""
    settings = web_settings(database_url, tmp_path)
    base = settings.public_url or ""
    await staff_account(sessions, "lan", "mật khẩu của Lan 2026")
    async with sessions() as s, s.begin():
        ticket = await assigned_ticket(s)
        await make_user(s, "ward_staff", "W14812", chat_id="8003")
        minh = await make_user(s, "ward_staff", "W14812")
    page = f"/tickets/{ticket.code}"
    async with running(settings), Visitor() as browser, aiohttp.ClientSession() as http:
        assert (await browser.log_in(base, "lan", "mật khẩu của Lan 2026")).status == 303
        csrf = form_token((await browser.get(base + page)).text, f"{page}/act")

        async def dashboard() -> str:
            answer = await browser.request(
                "POST", f"{base}{page}/act", data={"action": "claim", "csrf": csrf}
            )
            assert answer.status == 303, answer.text
            return answer.location

        async def api() -> tuple[int, dict[str, Any]]:
            async with http.post(
                f"{base}/api/v1/tickets/{ticket.code}/actions",
                json={"action": "claim"},
                headers={TEST_USER_HEADER: minh.username},
            ) as r:
                return r.status, await r.json()

        async def card() -> ClaimOutcome:
            async with sessions() as s, s.begin():
                return await claim_from_card(s, "telegram", GROUP, "8003", ticket.code, POLICIES)

        # In this order in PostgreSQL's queue for the row: the card, which read without
        # a lock, comes last, after the claim it must not overwrite.
        async with held(engine, ticket.id):
            contenders: list[asyncio.Task[Any]] = [start(dashboard())]
            await waiting(engine, contenders)
            contenders.append(start(api()))
            await waiting(engine, contenders)
            contenders.append(start(card()))
            await waiting(engine, contenders)
        shown, (status, body), pressed = await asyncio.gather(*contenders)
        refused = None if shown.endswith("done=ok") else await browser.get(base + shown)

    claims = [e for e in await audit(sessions, ticket.id) if e[0] == "claim"]
    assert claims == [("claim", "assigned", "claimed")]
    async with sessions() as s:
        claimer = await s.scalar(
            select(User).join(Ticket, Ticket.claimed_by == User.id).where(Ticket.id == ticket.id)
        )
    assert claimer is not None
    outcomes = [shown.endswith("done=ok"), status == 200, pressed.claimed]
    assert outcomes.count(True) == 1, (shown, status, body, pressed)
    if status != 200:
        assert (status, body["error"]) == (409, "wrong_state")
    if not pressed.claimed:
        assert pressed.key == "card.taken"
        assert claimer.display_name in translate("vi", pressed.key, **pressed.params)
    if refused is not None:
        assert shown.endswith("error=wrong_state")
        assert "Thao tác không hợp lệ ở trạng thái hiện tại." in refused.text


async def test_opposite_merges_at_once_neither_deadlock_nor_loop(
    engine: AsyncEngine,
    second_engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A into B and B into A at once: one merge, and the other is refused (no deadlock:
    the two transactions lock both tickets in one order; there is no retry here)."""
    async with sessions() as s, s.begin():
        first = await make_ticket(s)
        later = await make_ticket(s)
        operator = await make_user(s, "operator", "P38")

    async def merge(factory: async_sessionmaker[AsyncSession], code: str, into: str) -> str | None:
        async with factory() as s, s.begin():
            actor = await Actor.of_user(s, operator)
            ticket = await find_visible_ticket(s, actor, code)
            assert ticket is not None
            try:
                await act(s, ticket, Action("merge", case_code=into), actor, POLICIES)
            except WorkflowError as exc:
                await s.rollback()
                return exc.code
            return None

    # The merge of the first into the later one waits first for the first (lower id):
    # had the other merge locked its own ticket before waiting for the same, the two
    # would deadlock once the first is free.
    assert first.id < later.id
    async with held(engine, first.id):
        merges = [start(merge(sessions, first.code, later.code))]
        await waiting(engine, merges)
        merges.append(start(merge(session_factory(second_engine), later.code, first.code)))
        await waiting(engine, merges)
    outcomes = await asyncio.gather(*merges)

    assert sorted(map(str, outcomes)) == ["None", "case_required"]
    async with sessions() as s:
        rows = {t.id: (t.state, t.case_id) for t in await s.scalars(select(Ticket))}
    merged = [tid for tid, (state, _) in rows.items() if state == "merged"]
    assert len(merged) == 1, rows
    (other,) = {first.id, later.id} - set(merged)
    assert rows[merged[0]][1] == other and rows[other] == ("received", None)


@pytest.mark.parametrize("who", ["reporter", "operator"])
async def test_the_automatic_close_and_a_reopen_at_once(
    who: str, sessions: async_sessionmaker[AsyncSession], second_engine: AsyncEngine
) -> None:
    """The worker closes an answered ticket while a reopen's transaction, which had read
    the ticket already (a batch shows a ticket before a button reopens it), is open: the
    reopen sees the close and is refused; neither change is lost or doubled."""
    async with sessions() as s, s.begin():
        ticket = await assigned_ticket(s)
        staff = await Actor.of_user(s, await make_user(s, "ward_staff", "W14812"))
        operator = await Actor.of_user(s, await make_user(s, "operator", "P38"))
        for step in ("claim", "verify", "confirm"):
            await apply(s, ticket, Action(step), staff, POLICIES)
        answer = Action("answer", result="Đã thu dọn.", photos=[PHOTO])
        await apply(s, ticket, answer, staff, POLICIES)
        assert ticket.reopen_until is not None
        window_end = ticket.reopen_until
    reporter = Actor(role="reporter", reporter_id=ticket.reporter_id)
    worker = DeadlineWorker(session_factory(second_engine), POLICIES, 60)
    refused: list[str] = []
    async with sessions() as s, s.begin():
        seen = await s.get(Ticket, ticket.id)
        assert seen is not None and seen.state == "answered"
        assert await worker.run_once(now=window_end + timedelta(minutes=1)) == (0, 1)
        # The reporter pressed "not fixed" a moment before the window closed.
        pressed = window_end - timedelta(seconds=1)
        try:
            if who == "reporter":
                found = await find_ticket(s, ticket.code, lock=True)
                assert found is not None
                await apply(s, found, Action("reopen"), reporter, POLICIES, now=pressed)
            else:
                found = await find_visible_ticket(s, operator, ticket.code)
                assert found is not None
                await act(s, found, Action("reopen", reason="x"), operator, POLICIES, now=pressed)
        except WorkflowError as exc:
            refused.append(exc.code)
    assert refused == ["wrong_state"]
    assert (await audit(sessions, ticket.id))[-1] == ("close", "answered", "closed")
    async with sessions() as s:
        assert await s.scalar(select(Ticket.state).where(Ticket.id == ticket.id)) == "closed"


async def test_a_claim_while_the_worker_escalates(
    engine: AsyncEngine, second_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A staff member claims an overdue ticket while the worker's pass runs: the worker
    waits, and leaves the claimed ticket alone (it is no longer overdue), or escalates it
    before the claim; the claim and the audit trail stay whole either way."""
    async with sessions() as s, s.begin():
        ticket = await assigned_ticket(s)
        lan = await make_user(s, "ward_staff", "W14812", chat_id="8001")
        assert ticket.due_at is not None
        late = ticket.due_at + timedelta(minutes=5)
    claimed = asyncio.Event()
    go_on = asyncio.Event()

    async def claim() -> ClaimOutcome:
        async with sessions() as s, s.begin():
            outcome = await claim_from_card(s, "telegram", GROUP, "8001", ticket.code, POLICIES)
            claimed.set()
            await go_on.wait()
            return outcome

    async def escalate() -> list[int]:
        async with session_factory(second_engine)() as s, s.begin():
            return await escalate_overdue(s, POLICIES, now=late)

    pressing = start(claim())
    await claimed.wait()
    escalating = start(escalate())
    await asyncio.sleep(0.5)  # the worker reads, and waits for the claim's transaction
    go_on.set()
    outcome, escalated = await asyncio.gather(pressing, escalating)

    assert outcome.claimed
    trail = await audit(sessions, ticket.id)
    for before, after in pairwise(trail):
        assert before[2] == after[1], trail  # each event starts where the last one ended
    assert trail[-1] == ("claim", "assigned", "claimed") or escalated == []
    assert escalated == [] or trail[-2:] == [
        ("escalate", "assigned", "assigned"),
        ("claim", "assigned", "claimed"),
    ]
    async with sessions() as s:
        stored = await s.get(Ticket, ticket.id)
        assert stored is not None
        assert (stored.state, stored.claimed_by) == ("claimed", lan.id)
        assert stored.escalation_count == len(escalated)
