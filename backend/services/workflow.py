"""The QĐ 174 lifecycle as data: one service applies a transition, audits it, sets the due
time and tells the reporter, in the caller's transaction. Nothing else changes a state.

receive → classify → (forward) assign → claim → verify → handle → answer → close, with
reject, transfer, merge into a case, extension (gia hạn) and reopen beside them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.metrics import TRANSITIONS as TRANSITIONS_MADE
from backend.models import AuditEvent, Category, Ticket, Unit, User, Ward, utcnow
from backend.services.cards import post_cards
from backend.services.deadlines import DeadlinePolicy, Policies
from backend.services.intake import photo_rows
from backend.services.notify import tell_reporters
from backend.services.routing import COMPETENCES, unit_for
from backend.services.webhooks import ticket_changed
from backend.timeutil import format_local

Role = Literal[
    "reporter", "operator", "ward_staff", "ward_leader", "supervisor", "police", "admin", "system"
]
ROLES: tuple[Role, ...] = (
    "reporter",
    "operator",
    "ward_staff",
    "ward_leader",
    "supervisor",
    "police",
    "admin",
    "system",
)
STATES = (
    "received",
    "classified",
    "assigned",
    "claimed",
    "verifying",
    "not_confirmed",
    "handling",
    "answered",
    "reopened",
    "transferred",
    "closed",
    "rejected",
    "merged",
)
# The actor of a province's auto-classification (its audit trail says so).
AUTO = "auto"
# States with a step still to do: these can be overdue.
OPEN_STATES = (
    "received",
    "classified",
    "assigned",
    "claimed",
    "verifying",
    "not_confirmed",
    "handling",
    "reopened",
    "transferred",
)
FINAL_STATES = ("closed", "rejected", "merged")


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    """Overdue is not a state: a step still to do, past its due time."""
    return ticket.state in OPEN_STATES and ticket.due_at is not None and ticket.due_at < now


def overdue_filter(now: datetime) -> ColumnElement[bool]:
    """is_overdue() as a WHERE clause."""
    return and_(Ticket.state.in_(OPEN_STATES), Ticket.due_at < now)


# Refusal only with a stated reason (DOMAIN.md): these are the reasons.
REJECT_REASONS = ("not_pollution", "no_place", "abusive", "spam")
URGENCIES = ("urgent", "normal")

_HANDLERS: frozenset[Role] = frozenset({"ward_staff", "ward_leader", "supervisor", "police"})
_TRIAGE: frozenset[Role] = frozenset({"operator", "supervisor", "admin"})


@dataclass(frozen=True)
class Transition:
    """One row of the table: from which states, to which, who may, what it needs."""

    action: str
    sources: frozenset[str]
    target: str | None  # None: the state stays (an extension, say)
    roles: frozenset[Role]
    requires: frozenset[str] = frozenset()


def _t(
    action: str,
    sources: Sequence[str],
    target: str | None,
    roles: frozenset[Role] | set[Role],
    requires: Sequence[str] = (),
) -> Transition:
    return Transition(action, frozenset(sources), target, frozenset(roles), frozenset(requires))


TRANSITIONS: tuple[Transition, ...] = (
    _t("classify", ["received"], "classified", _TRIAGE | {"system"}, ["competence"]),
    # Forwarded but not yet taken up (an auto-classified report): urgency and competence
    # changed by intake; another unit gets it afresh.
    _t("reclassify", ["assigned"], None, _TRIAGE, ["competence"]),
    _t("assign", ["classified"], "assigned", _TRIAGE | {"system"}),
    _t("claim", ["assigned", "transferred", "reopened"], "claimed", _HANDLERS),
    _t("verify", ["claimed"], "verifying", _HANDLERS),
    _t("confirm", ["verifying"], "handling", _HANDLERS),
    _t("not_confirmed", ["verifying"], "not_confirmed", _HANDLERS, ["reason"]),
    _t("answer", ["handling", "not_confirmed"], "answered", _HANDLERS, ["result", "photos"]),
    _t("close", ["answered"], "closed", {"ward_leader", "supervisor", "admin", "system"}),
    _t("reopen", ["answered"], "reopened", {"reporter", "operator", "supervisor"}),
    _t("reject", ["received", "classified"], "rejected", _TRIAGE, ["reason"]),
    _t(
        "transfer",
        ["classified", "assigned", "transferred", "claimed", "verifying", "handling", "reopened"],
        "transferred",
        _TRIAGE | {"ward_leader"},
        ["reason", "unit"],
    ),
    _t(
        "extend",
        [
            "assigned",
            "transferred",
            "claimed",
            "verifying",
            "handling",
            "not_confirmed",
            "reopened",
        ],
        None,
        {"ward_leader", "supervisor", "admin"},
        ["reason", "due"],
    ),
    _t("mark_complex", ["claimed", "verifying", "handling"], None, _HANDLERS, ["reason"]),
    # The system merges when the reporter says a suggested case is the same problem.
    _t(
        "merge",
        ["received", "classified", "assigned", "transferred"],
        "merged",
        _TRIAGE | {"system"},
        ["case"],
    ),
)
TABLE: dict[str, Transition] = {t.action: t for t in TRANSITIONS}


# How many more times a staff action runs when the database refused its transaction for a
# race with another (a deadlock, a lock timeout; see backend.db.write_retrying).
ACTION_RETRIES = 3


class WorkflowError(Exception):
    """An action the table does not allow; `code` names the reason for the caller."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True)
class Actor:
    """Who acts: a staff member (with unit), the reporter, or the system itself."""

    role: Role
    user_id: int | None = None
    unit_id: int | None = None
    province_code: str | None = None
    reporter_id: int | None = None
    # The system acting on a province's policy rather than on its own clock: "auto".
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.reporter_id is not None:
            return f"reporter:{self.reporter_id}"
        return self.role

    @classmethod
    def system(cls) -> Actor:
        return cls(role="system")

    @classmethod
    def auto(cls) -> Actor:
        """Auto-classification (a province's auto_classify policy)."""
        return cls(role="system", name=AUTO)

    @classmethod
    async def of_user(cls, session: AsyncSession, user: User) -> Actor:
        """The actor for a staff account: its role, unit and the unit's province."""
        if user.role not in ROLES or user.role in ("reporter", "system"):
            raise WorkflowError("forbidden", f"no staff role {user.role!r}")
        unit = await session.get(Unit, user.unit_id) if user.unit_id else None
        return cls(
            role=user.role,
            user_id=user.id,
            unit_id=user.unit_id,
            province_code=unit.province_code if unit else None,
        )


@dataclass
class Action:
    """What the caller asks for, with what the table may require."""

    action: str
    note: str | None = None
    reason: str | None = None
    result: str | None = None
    photos: Sequence[dict[str, Any]] = field(default_factory=list)
    unit_code: str | None = None
    due: datetime | None = None
    case_code: str | None = None
    urgency: str | None = None
    competence: str | None = None


def allowed_actions(ticket: Ticket, role: Role) -> list[str]:
    """The actions the table allows for a role on a ticket in its current state."""
    return [t.action for t in TRANSITIONS if ticket.state in t.sources and role in t.roles]


def scope_query(query: Select[Any], actor: Actor) -> Select[Any]:
    """A ticket query narrowed to what an actor may see: own unit, or own province for
    triage roles, or everything for admins."""
    if actor.role in ("admin", "system"):
        return query
    if actor.role in ("operator", "supervisor"):
        return query.join(Ward, Ward.code == Ticket.ward_code).where(
            Ward.province_code == actor.province_code
        )
    if actor.role == "reporter":
        return query.where(Ticket.reporter_id == actor.reporter_id)
    return query.where(Ticket.unit_id == actor.unit_id)


async def in_scope(session: AsyncSession, actor: Actor, ticket: Ticket) -> bool:
    """Whether an actor may act on a ticket at all: own ticket, own unit, own province."""
    if actor.role in ("system", "admin"):
        return True
    if actor.role == "reporter":
        if actor.reporter_id is None:
            return False
        if actor.reporter_id == ticket.reporter_id:
            return True
        # Every reporter of a case follows it, through the report merged into it.
        member = await session.scalar(
            select(Ticket.id).where(
                Ticket.case_id == ticket.id, Ticket.reporter_id == actor.reporter_id
            )
        )
        return member is not None
    if actor.role in ("operator", "supervisor"):
        ward = await session.get(Ward, ticket.ward_code)
        return ward is not None and ward.province_code == actor.province_code
    return actor.unit_id is not None and actor.unit_id == ticket.unit_id


async def apply(
    session: AsyncSession,
    ticket: Ticket,
    request: Action,
    actor: Actor,
    policies: Policies,
    *,
    now: datetime | None = None,
) -> Ticket:
    """Apply one action to a ticket: check it, change it, audit it, set the due time and
    tell the reporter. Raises WorkflowError and changes nothing when it is not allowed.

    The ticket (and a merge's case) is locked and read afresh first, in the caller's
    transaction: of two actions at once, the second sees what the first did.
    """
    now = now or utcnow()
    rule = TABLE.get(request.action)
    if rule is None:
        raise WorkflowError("unknown_action", request.action)
    await _lock_for(session, ticket, request, actor)
    if ticket.state not in rule.sources:
        raise WorkflowError("wrong_state", f"{request.action} from {ticket.state}")
    if actor.role not in rule.roles:
        raise WorkflowError("forbidden", f"{actor.role} may not {request.action}")
    if not await in_scope(session, actor, ticket):
        raise WorkflowError("out_of_scope")
    _check_requirements(rule, request, ticket, now)
    ward = await session.get(Ward, ticket.ward_code)
    policy = policies.for_province(ward.province_code if ward else None)
    before = ticket.state
    due_by = ticket.due_at
    if rule.target is not None and ticket.due_at is not None and now > ticket.due_at:
        ticket.late = True  # a step finished after its due time (for the on-time rate)
    note = request.note or request.reason
    effect = _EFFECTS[request.action]
    extra = await effect(_Step(session, ticket, request, actor, policy, now))
    if rule.target is not None:
        ticket.state = rule.target
    ticket.updated_at = now
    session.add(
        AuditEvent(
            ticket_id=ticket.id,
            actor=actor.label,
            action=request.action,
            from_state=before,
            to_state=ticket.state,
            note=extra or note,
            created_at=now,
            due_by=due_by,
        )
    )
    await ticket_changed(session, ticket, request.action, before, now)
    await session.flush()
    # Counted when made, so a transaction that then fails (and is tried again) counts
    # more than once: the metric's help says so.
    TRANSITIONS_MADE.labels(action=request.action).inc()
    return ticket


# A report of this category says too little to be classified without a person.
UNCLEAR_CATEGORY = "other"


async def auto_classify(
    session: AsyncSession, ticket: Ticket, policies: Policies, now: datetime
) -> bool:
    """Under a province's auto_classify policy, classify a report just received whose
    category is clear and forward it at once; audited as "auto". Intake may reclassify
    it until it is taken up. Whether it was."""
    ward = await session.get(Ward, ticket.ward_code)
    policy = policies.for_province(ward.province_code if ward else None)
    if not policy.auto_classify or ticket.category_code == UNCLEAR_CATEGORY:
        return False
    if ticket.state != "received":
        return False
    category = await session.get(Category, ticket.category_code)
    handler = category.default_handler if category is not None else "ward"
    request = Action(
        "classify",
        urgency=ticket.urgency,
        competence=handler if handler in COMPETENCES else "ward",
    )
    await apply(session, ticket, request, Actor.auto(), policies, now=now)
    await apply(session, ticket, Action("assign"), Actor.auto(), policies, now=now)
    return True


async def act(
    session: AsyncSession,
    ticket: Ticket,
    request: Action,
    actor: Actor,
    policies: Policies,
    *,
    now: datetime | None = None,
) -> Ticket:
    """apply(), then what follows by itself: a classified ticket is forwarded at once."""
    await apply(session, ticket, request, actor, policies, now=now)
    if ticket.state == "classified":
        await apply(session, ticket, Action("assign"), Actor.system(), policies, now=now)
    return ticket


async def _lock_for(session: AsyncSession, ticket: Ticket, request: Action, actor: Actor) -> None:
    """Lock what the action changes or relies on: the ticket, and for a merge the case
    (with the case it was merged into, if any), all in one call, so in id order."""
    if ticket.id is None:
        await session.flush()
    ids = [ticket.id]
    if request.action == "merge" and request.case_code:
        # Found without a lock, only to know which rows to lock; _merge reads them again.
        case = await find_visible_ticket(session, actor, request.case_code)
        while case is not None and case.id not in ids:
            ids.append(case.id)
            case = await session.get(Ticket, case.case_id) if case.case_id else None
    await lock_tickets(session, ids)


def _check_requirements(rule: Transition, request: Action, ticket: Ticket, now: datetime) -> None:
    needs = rule.requires
    if "reason" in needs and not (request.reason or "").strip():
        raise WorkflowError("reason_required")
    if request.action == "reject" and request.reason not in REJECT_REASONS:
        raise WorkflowError("reason_required", f"one of {', '.join(REJECT_REASONS)}")
    if "result" in needs and not (request.result or "").strip():
        raise WorkflowError("result_required")
    if "photos" in needs and not request.photos and ticket.confirmed is not False:
        # A photo shows what was done; where no pollution was found, the reason given
        # at not_confirmed and the answer's text say why.
        raise WorkflowError("photos_required")
    if "competence" in needs and not request.competence:
        # Who is competent (Điều 6) decides who handles it: never left to a default.
        raise WorkflowError("competence_required")
    if "unit" in needs and not request.unit_code and not request.competence:
        raise WorkflowError("unit_required")
    if "due" in needs:
        if request.due is None or request.due <= now:
            raise WorkflowError("due_required", "a new date in the future")
        if ticket.due_at is not None and request.due <= ticket.due_at:
            raise WorkflowError("due_required", "later than the current due time")
    if "case" in needs and not request.case_code:
        raise WorkflowError("case_required")
    if request.urgency is not None and request.urgency not in URGENCIES:
        raise WorkflowError("bad_urgency")
    if request.competence is not None and request.competence not in COMPETENCES:
        raise WorkflowError("bad_competence")


# --- effects: what each action does besides the state (returns an audit note or None) ----


class _Step(NamedTuple):
    """What an effect works with: the action in its context."""

    session: AsyncSession
    ticket: Ticket
    request: Action
    actor: Actor
    policy: DeadlinePolicy
    now: datetime


async def _classify(step: _Step) -> str | None:
    session, ticket, request, _, policy, now = step
    if request.urgency is not None:
        ticket.urgency = request.urgency
    if request.competence is not None:
        ticket.competence = request.competence
        ticket.unit_id = (await unit_for(session, request.competence, ticket.ward_code)).id
    ticket.classified_at = now
    ticket.due_at = policy.forward_due(now)
    return f"urgency={ticket.urgency}; competence={ticket.competence or 'default'}"


async def _reclassify(step: _Step) -> str | None:
    session, ticket, request, _, policy, now = step
    if request.urgency is not None:
        ticket.urgency = request.urgency
    ticket.competence = request.competence
    unit = await unit_for(session, request.competence or "ward", ticket.ward_code)
    note = f"urgency={ticket.urgency}; competence={ticket.competence}"
    if unit.id != ticket.unit_id:
        ticket.unit_id = unit.id
        ticket.assigned_at = now
        ticket.due_at = policy.claim_due(now)
        await post_cards(session, ticket)
        # The unit it now goes to: the public page says so (public_case).
        note += f"; unit={unit.code}"
    return note


async def _assign(step: _Step) -> str | None:
    session, ticket, _, _, policy, now = step
    ticket.assigned_at = now
    ticket.due_at = policy.claim_due(now)
    unit = await session.get(Unit, ticket.unit_id)
    ward = await session.get(Ward, ticket.ward_code)
    await post_cards(session, ticket)
    if step.actor.name != AUTO:
        # Forwarded as it was received: the confirmation of the report says so.
        await tell_reporters(
            session,
            await case_tickets(session, ticket),
            "notify.assigned",
            {"unit": unit.name if unit else "", "ward": ward.name if ward else ""},
        )
    return unit.code if unit else None


async def _claim(step: _Step) -> str | None:
    _, ticket, _, actor, policy, now = step
    ticket.claimed_by = actor.user_id
    ticket.claimed_at = now
    ticket.due_at = policy.answer_due(now, ticket.urgency, ticket.complex)
    return None


async def _keep_due(step: _Step) -> str | None:
    return None


async def _verified(step: _Step) -> str | None:
    """Verification (xác minh) ends: the pollution is confirmed, or it is not."""
    _, ticket, request, _, _, now = step
    ticket.verified_at = now
    ticket.confirmed = request.action == "confirm"
    ticket.was_verified = True
    return None


def _new_round(ticket: Ticket) -> None:
    """A transfer or a reopen: the next unit (or the same, again) verifies afresh."""
    ticket.verified_at = None
    ticket.confirmed = None


async def _answer(step: _Step) -> str | None:
    session, ticket, request, _, policy, now = step
    ticket.result_text = (request.result or "").strip()
    ticket.answered_at = now
    ticket.answered_due_at = ticket.due_at
    if ticket.confirmed:
        ticket.was_handled = True
    ticket.due_at = None
    ticket.reopen_until = policy.reopen_until(now)
    session.add_all(photo_rows(ticket.id, request.photos, "result", now))
    rating = [
        [{"label": f"{n}⭐", "data": f"t|{{code}}|rate|{n}"} for n in range(1, 6)],
        [{"key": "feedback.not_fixed", "data": "t|{code}|reopen"}],
    ]
    merged = await case_tickets(session, ticket)
    for member in merged:
        if member.id != ticket.id and member.state == "merged":
            member.result_text = ticket.result_text
            member.answered_at = now
    await tell_reporters(
        session,
        merged,
        "notify.answered",
        {"result": ticket.result_text, "until": format_local(ticket.reopen_until)},
        photos=[p["sha256"] for p in request.photos],
        buttons=rating,
    )
    return None


async def _close(step: _Step) -> str | None:
    session, ticket, _, _, _, now = step
    ticket.closed_at = now
    ticket.due_at = None
    ticket.reopen_until = None
    members = await case_tickets(session, ticket)
    for member in members:
        if member.id != ticket.id and member.state == "merged":
            member.closed_at = now
    await tell_reporters(session, members, "notify.closed", {})
    return None


async def _reopen(step: _Step) -> str | None:
    session, ticket, _, _, policy, now = step
    if ticket.reopen_until is not None and now > ticket.reopen_until:
        raise WorkflowError("reopen_window_over")
    ticket.reopen_count += 1
    _new_round(ticket)
    ticket.reopen_until = None
    ticket.answered_at = None
    ticket.claimed_by = None
    # Claimed again in the new round: the old claim would make its wait negative.
    ticket.claimed_at = None
    ticket.assigned_at = now
    ticket.due_at = policy.claim_due(now)
    await post_cards(session, ticket)
    # Everyone on the case hears it, whoever of them reopened it.
    await tell_reporters(session, await case_tickets(session, ticket), "notify.reopened", {})
    return None


async def _reject(step: _Step) -> str | None:
    session, ticket, request, *_ = step
    ticket.rejection_reason = request.reason
    ticket.due_at = None
    await tell_reporters(
        session, [ticket], "notify.rejected", {"reason_key": f"reject.{request.reason}"}
    )
    return f"{request.reason}: {request.note}" if request.note else request.reason


async def _transfer(step: _Step) -> str | None:
    session, ticket, request, actor, policy, now = step
    if request.unit_code:
        unit = await session.scalar(select(Unit).where(Unit.code == request.unit_code))
        # Another province's units are, to the actor, no units at all (the ministry and
        # admins reach across): that province would get a case it never had.
        if unit is None or not (
            actor.role in ("admin", "system") or unit.province_code in (None, actor.province_code)
        ):
            raise WorkflowError("unit_required", f"no unit {request.unit_code}")
    else:
        unit = await unit_for(session, request.competence or "ward", ticket.ward_code)
    if unit.id == ticket.unit_id:
        raise WorkflowError("unit_required", "the ticket is already there")
    old = await session.get(Unit, ticket.unit_id)
    ticket.unit_id = unit.id
    ticket.transfer_count += 1
    _new_round(ticket)
    ticket.competence = request.competence or ticket.competence
    ticket.claimed_by = None
    ticket.claimed_at = None
    ticket.assigned_at = now
    ticket.due_at = policy.claim_due(now)
    await post_cards(session, ticket)
    await tell_reporters(
        session,
        await case_tickets(session, ticket),
        "notify.transferred",
        {"unit": unit.name, "reason": request.reason or ""},
    )
    return f"{old.code if old else '?'} → {unit.code}: {request.reason}"


async def _extend(step: _Step) -> str | None:
    session, ticket, request, *_ = step
    if request.due is None:
        raise WorkflowError("due_required")
    previous = ticket.due_at
    ticket.due_at = request.due
    await tell_reporters(
        session,
        [ticket],
        "notify.extended",
        {"due": format_local(request.due), "reason": request.reason or ""},
    )
    was = format_local(previous) if previous else "-"
    return f"{was} → {format_local(request.due)}: {request.reason}"


async def _mark_complex(step: _Step) -> str | None:
    _, ticket, _, _, policy, *_ = step
    ticket.complex = True
    if ticket.claimed_at is not None:
        ticket.due_at = policy.answer_due(ticket.claimed_at, ticket.urgency, True)
    return None


async def _merge(step: _Step) -> str | None:
    session, ticket, request, actor, *_ = step
    missing = WorkflowError("case_required", f"no other ticket {request.case_code}")
    # A case the actor may not see is, to them, no case at all (looked up as one, in one
    # query): merging into another province's case would send its answer to this
    # reporter.
    case = await find_visible_ticket(session, actor, request.case_code or "")
    if case is None or case.id == ticket.id:
        raise missing
    seen = {case.id}
    # Merge into the case itself, not into a member. The chain was locked before (see
    # _lock_for); a link made since is locked here, out of order but rarely.
    while case.case_id is not None and case.case_id not in seen:
        parents = await lock_tickets(session, [case.case_id])
        if not parents:
            break
        case = parents[0]
        seen.add(case.id)
    if not await in_scope(session, actor, case):
        raise missing
    if case.state in ("rejected", "merged") or case.id == ticket.id:
        raise WorkflowError("case_required", f"{case.code} cannot take reports")
    ticket.case_id = case.id
    ticket.due_at = None
    for member in await session.scalars(select(Ticket).where(Ticket.case_id == ticket.id)):
        member.case_id = case.id
    return case.code


_EFFECTS = {
    "classify": _classify,
    "reclassify": _reclassify,
    "assign": _assign,
    "claim": _claim,
    "verify": _keep_due,
    "confirm": _verified,
    "not_confirmed": _verified,
    "answer": _answer,
    "close": _close,
    "reopen": _reopen,
    "reject": _reject,
    "transfer": _transfer,
    "extend": _extend,
    "mark_complex": _mark_complex,
    "merge": _merge,
}


def audit_note(
    ticket: Ticket, actor: str, action: str, note: str | None, now: datetime
) -> AuditEvent:
    """An audit event for something done to a ticket that leaves its state as it is."""
    return AuditEvent(
        ticket_id=ticket.id,
        actor=actor,
        action=action,
        from_state=ticket.state,
        to_state=ticket.state,
        note=note,
        created_at=now,
    )


async def rate(
    session: AsyncSession, ticket: Ticket, stars: int, actor: Actor, *, now: datetime | None = None
) -> None:
    """The reporter's 1–5 rating of an answer (the latest rating counts)."""
    if not 1 <= stars <= 5:
        raise WorkflowError("bad_rating")
    await lock_tickets(session, [ticket.id])
    if ticket.answered_at is None and ticket.state not in ("answered", "closed"):
        raise WorkflowError("wrong_state", "nothing answered to rate")
    if not await in_scope(session, actor, ticket):
        raise WorkflowError("out_of_scope")
    ticket.rating = stars
    session.add(audit_note(ticket, actor.label, "rate", str(stars), now or utcnow()))


async def case_tickets(session: AsyncSession, ticket: Ticket) -> list[Ticket]:
    """The ticket and every report merged into it (the case's reporters hear the result)."""
    merged = await session.scalars(select(Ticket).where(Ticket.case_id == ticket.id))
    return [ticket, *merged]


async def find_visible_ticket(
    session: AsyncSession, actor: Actor, code: str, *, lock: bool = False
) -> Ticket | None:
    """The ticket with this code if the actor may see it, in one scoped query: a ticket
    outside the actor's scope takes the same work, and time, as one that does not exist.
    lock: locked for a change, and read afresh (see lock_tickets)."""
    query = scope_query(select(Ticket), actor).where(Ticket.code == code)
    if lock:
        query = await _locking(session, query, Ticket.code == code)
    found: Ticket | None = await session.scalar(query)
    return found


async def find_ticket(session: AsyncSession, code: str, *, lock: bool = False) -> Ticket | None:
    """The ticket with this code; lock: locked for a change, and read afresh."""
    query = select(Ticket).where(Ticket.code == code)
    if lock:
        query = await _locking(session, query, Ticket.code == code)
    return await session.scalar(query)


async def lock_tickets(session: AsyncSession, ids: Iterable[int]) -> list[Ticket]:
    """Tickets locked for a change in the caller's transaction, read afresh, in id order.

    Every transaction that locks tickets takes them in this one order: two of them (two
    opposite merges) never hold one each while waiting for the other's. Locking a ticket
    the transaction holds already costs a query, and never waits.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return []
    where = Ticket.id.in_(wanted)
    query = await _locking(session, select(Ticket).where(where).order_by(Ticket.id), where)
    return list(await session.scalars(query))


async def _locking(
    session: AsyncSession, query: Select[Any], rows: ColumnElement[bool]
) -> Select[Any]:
    """The query, made to read its tickets locked and afresh (a ticket this session read
    before is read again from the database, not taken from memory).

    PostgreSQL locks the rows: SELECT … FOR UPDATE waits for another transaction that
    holds one, then reads what it committed. SQLite has one writer at a time, and a read
    outside a write takes no lock: a write that changes nothing (to the `rows`) takes the
    database's write lock first, waiting for a writer that holds it, so that no other
    writer can commit between this read and this transaction's own write. Should SQLite
    refuse the write (a transaction that read before another writer committed), the
    caller runs the whole action again (backend.db.write_retrying).
    """
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Ticket)
    else:
        await session.execute(
            update(Ticket)
            .where(rows)
            .values(updated_at=Ticket.updated_at)
            .execution_options(synchronize_session=False)
        )
    return query.execution_options(populate_existing=True)
