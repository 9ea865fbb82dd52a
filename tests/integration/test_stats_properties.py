"""Property: whatever happens to a few reports (reopens, transfers, merges, in any order
the table allows), the monthly figures are never negative, no step takes negative time,
and the counts agree with the audit trail."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from backend.db import create_engine, session_factory
from backend.models import AuditEvent, Ticket
from backend.services.deadlines import Policies
from backend.services.stats import Scope, monthly_report, period_of
from backend.services.workflow import TABLE, Action, WorkflowError, apply
from backend.timeutil import VN_TZ
from tests.factories import PHOTO, actor, make_ticket

POLICIES = Policies.load()
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=VN_TZ)
# The actions of a lifecycle; each by a role that may take it.
ACTIONS = (
    *("classify", "assign", "claim", "verify", "confirm", "not_confirmed", "answer"),
    *("transfer", "reopen", "merge", "close", "extend", "reject"),
)
BY = {
    "classify": "operator",
    "assign": "operator",
    "claim": "ward_staff",
    "verify": "ward_staff",
    "confirm": "ward_staff",
    "not_confirmed": "ward_staff",
    "answer": "ward_staff",
    "transfer": "operator",
    "reopen": "operator",
    "merge": "operator",
    "close": "supervisor",
    "extend": "ward_staff",
    "reject": "operator",
}
ROUND_RESETS = ("transfer", "reopen")


def _request(action: str, case_code: str, now: datetime, competence: str | None) -> Action:
    """A complete request: whatever the action needs. A transfer goes to the province and
    back to the ward."""
    return Action(
        action,
        reason="not_pollution" if action == "reject" else "lý do",
        result="Đã xử lý",
        photos=[PHOTO],
        competence=("ward" if competence == "province" else "province")
        if action == "transfer"
        else "ward"
        if action == "classify"
        else None,
        due=now + timedelta(days=30),
        case_code=case_code,
    )


def _handled(trail: list[str]) -> bool:
    """Whether some round confirmed the pollution and then answered it."""
    confirmed = False
    for action in trail:
        if action in ROUND_RESETS:
            confirmed = False
        elif action in ("confirm", "not_confirmed"):
            confirmed = action == "confirm"
        elif action == "answer" and confirmed:
            return True
    return False


async def _run(database_url: str, data: st.DataObject) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s, s.begin():
            tickets = [await make_ticket(s, now=T0) for _ in range(3)]
            actors = {
                "operator": await actor(s, "operator", "P38"),
                "ward_staff": await actor(s, "ward_staff", "W14812"),
                "supervisor": await actor(s, "supervisor", "P38"),
                "province": await actor(s, "supervisor", "P38"),
            }
            for i in range(data.draw(st.integers(0, 45))):
                ticket = data.draw(st.sampled_from(tickets))
                possible = [a for a in ACTIONS if ticket.state in TABLE[a].sources]
                if not possible:
                    continue
                action = data.draw(st.sampled_from(possible))
                role = BY[action]
                if action in ("claim", "verify", "confirm", "not_confirmed", "answer"):
                    # Whoever holds it now: the ward's staff, or the province's.
                    role = "province" if ticket.competence == "province" else "ward_staff"
                other = data.draw(st.sampled_from([t for t in tickets if t is not ticket]))
                now = T0 + timedelta(minutes=7 * i)
                request = _request(action, other.code, now, ticket.competence)
                try:
                    await apply(s, ticket, request, actors[role], POLICIES, now=now)
                except WorkflowError:
                    continue
            report = await monthly_report(
                s, period_of("2026-12"), Scope(province_code="38"), now=T0 + timedelta(days=2)
            )
            total = report.total
            for f in fields(total):
                assert getattr(total, f.name) >= 0, (f.name, total)
            for step in report.steps:
                for value in (step.median, step.p90, step.urgent_median, step.normal_median):
                    assert value is None or value >= 0, step
            trails: dict[int, list[str]] = {t.id: [] for t in tickets}
            for event in await s.scalars(
                select(AuditEvent)
                .where(AuditEvent.ticket_id.in_(list(trails)))
                .order_by(AuditEvent.id)
            ):
                trails[event.ticket_id or 0].append(event.action)
            cases = [
                t
                for t in await s.scalars(select(Ticket).where(Ticket.id.in_(list(trails))))
                if t.case_id is None and t.state != "rejected"
            ]
            assert total.cases == len(cases)
            assert total.verified == sum(
                any(a in ("confirm", "not_confirmed") for a in trails[t.id]) for t in cases
            )
            assert total.handled == sum(_handled(trails[t.id]) for t in cases)
            assert total.reopened == sum("reopen" in trails[t.id] for t in cases)
            assert total.transferred == sum("transfer" in trails[t.id] for t in cases)
            assert total.verified <= total.cases and total.handled <= total.verified
            await s.rollback()
    finally:
        await engine.dispose()


@settings(
    max_examples=40,
    derandomize=True,  # the same lifecycles on every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_figures_after_any_lifecycle_are_never_negative_and_match_the_trail(
    database_url: str, data: st.DataObject
) -> None:
    asyncio.run(_run(database_url, data))
