"""Limits on abuse in the dialogue: a muted reporter's messages get a neutral answer, and
a reporter over their allowance of reports (or additions) is told when they can send
again, with nothing stored.

A new report is checked when it would begin (a read), so nobody types a whole report
for nothing; it is counted when it is sent, in the transaction that stores it (the
count every process shares). See backend.services.abuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backend.crypto import keys
from backend.services.abuse import (
    ADDITIONS,
    REPORTS,
    counter,
    give_back,
    muted_until,
)
from backend.services.abuse import take_or_refuse as _take
from backend.services.limits import Limit, next_allowed
from backend.timeutil import format_local
from handlers.events import Incoming
from handlers.turn import Turn

# What a muted reporter can still do: see what became of their reports, and every
# right the personal-data law gives them (/mydata, /forgetme, /withdraw and the
# questions these ask), which a mute must not take away.
UNMUTED_COMMANDS = frozenset({"status", "my", "mydata", "forgetme", "withdraw", "lang", "help"})
UNMUTED_STATES = frozenset({"rights", "forget", "withdraw"})


async def is_muted(turn: Turn) -> bool:
    """Whether the chat's reporter is muted now, as the database says: asked where a
    report would begin, be sent or be added to."""
    reporter_id = turn.conv.reporter_id
    return reporter_id is not None and (
        await muted_until(turn.session, reporter_id, turn.services.now()) is not None
    )


async def _seems_muted(turn: Turn) -> bool:
    """Whether the reporter is muted, as this process knew it a few seconds ago: for
    every message, without a query each."""
    reporter_id = turn.conv.reporter_id
    return reporter_id is not None and (
        await turn.services.muted.until(turn.session, reporter_id, turn.services.now()) is not None
    )


async def answer_if_muted(turn: Turn, event: Incoming) -> bool:
    """A muted reporter's message (other than what UNMUTED_* allow): the neutral answer,
    and a draft of theirs is dropped. True when it was answered so."""
    if event.kind == "command" and event.command in UNMUTED_COMMANDS:
        return False
    if turn.state in UNMUTED_STATES:
        return False
    # What only moves a draft along (the draft is checked again when it is sent) may
    # go by what the process knew a few seconds ago; the rest asks the database.
    cached = turn.state != "idle" and event.kind not in ("command", "button")
    if not await (_seems_muted(turn) if cached else is_muted(turn)):
        return False
    turn.ack(event.callback_id)
    if event.kind == "geocoded":
        # The outcome of an address they typed before the mute: nothing to say.
        turn.reset()
    else:
        say_neutral(turn)
    return True


def say_neutral(turn: Turn) -> None:
    """Neither revealing the mute nor claiming that anything was filed."""
    if turn.state != "idle":
        turn.reset()
    turn.say("muted.neutral", remove_keyboard=True)


def _name(turn: Turn, kind: str) -> str:
    return counter(kind, turn.channel, keys().chat_key(turn.channel, turn.chat_id))


def _now(turn: Turn) -> float:
    return turn.services.now().timestamp()


def _say_limit(turn: Turn, key: str, kind: str, when: datetime) -> None:
    hour, day = turn.services.limits.of(kind)
    turn.say(key, per_hour=hour.count, per_day=day.count, when=format_local(when))


async def refuse_new_report(turn: Turn) -> bool:
    """Before a new report begins: when the reporter has sent as many as allowed, say so
    (and when they can send again) and return True; the draft is not begun. Reads only:
    a report is counted when it is sent."""
    name = _name(turn, REPORTS)
    when = await next_allowed(turn.session, name, turn.services.limits.reports, _now(turn))
    if when is None:
        return False
    _say_limit(turn, "limit.reports", REPORTS, when)
    return True


async def refuse_addition(turn: Turn, *, say: bool) -> bool:
    """Before an addition is offered: True when the chat has added as many as allowed
    now (said so, with when it can add again, if `say`). Reads only: an addition is
    counted when it is stored."""
    name = _name(turn, ADDITIONS)
    when = await next_allowed(turn.session, name, turn.services.limits.additions, _now(turn))
    if when is None:
        return False
    if say:
        _say_limit(turn, "limit.additions", ADDITIONS, when)
    return True


async def count_report(turn: Turn) -> bool:
    """At sending: count the report (in the transaction that stores it); False when the
    reporter is muted (the neutral answer) or it goes over the limit, in which case the
    draft is dropped and the reporter told that the report was neither sent nor kept,
    and when they can send again."""
    return await _count(turn, REPORTS, turn.services.limits.reports, "limit.reports_not_sent")


async def count_addition(turn: Turn) -> bool:
    """When an addition is stored: count it; False (said, nothing added) when the
    reporter is muted or over the limit."""
    return await _count(turn, ADDITIONS, turn.services.limits.additions, "limit.additions")


async def _count(turn: Turn, kind: str, limits: Sequence[Limit], message: str) -> bool:
    if await is_muted(turn):
        say_neutral(turn)
        return False
    when = await _take(turn.session, _name(turn, kind), limits, _now(turn))
    if when is None:
        return True
    turn.reset()
    _say_limit(turn, message, kind, when)
    return False


async def uncount_addition(turn: Turn) -> None:
    """An addition counted but not made (its report closed meanwhile): given back."""
    name = _name(turn, ADDITIONS)
    await give_back(turn.session, name, turn.services.limits.additions, _now(turn))
