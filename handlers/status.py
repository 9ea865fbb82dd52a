"""/status and /my: what became of a report."""

from __future__ import annotations

from typing import Any

from backend.services.reporters import find_reporter
from backend.services.tickets import (
    TicketStatus,
    status_by_code,
    tickets_of_reporter,
)
from backend.timeutil import format_local
from handlers.turn import Turn


def _state_label(turn: Turn, status: TicketStatus) -> str:
    return turn.t(f"ticket_state.{status.state}")


async def show_status(turn: Turn, code: str) -> None:
    code = code.strip().upper()
    if not code:
        turn.say("status.usage")
        return
    status = await status_by_code(turn.session, code)
    # Looked up, never made: a look-up stores nothing about whoever asks.
    reporter_id = await find_reporter(turn.session, turn.channel, turn.chat_id)
    owner = status is not None and reporter_id is not None and status.reporter_id == reporter_id
    if status is None or not (owner or status.public):
        # A case hidden from the public is, to anyone but its reporter, no case at all.
        turn.say("status.not_found", code=code[:30])
        return
    params: dict[str, Any] = {
        "code": status.code,
        "state": _state_label(turn, status),
        "ward": status.ward_name,
        "unit": status.unit_name,
        "updated": format_local(status.updated_at),
    }
    if owner:
        turn.say(
            "status.owner",
            category=status.category_en if turn.conv.language == "en" else status.category_vi,
            created=format_local(status.created_at),
            description=status.description[:300],
            page=status.code,
            **params,
        )
    else:
        turn.say("status.public", page=status.code, **params)


async def show_mine(turn: Turn) -> None:
    reporter_id = await find_reporter(turn.session, turn.channel, turn.chat_id)
    mine = await tickets_of_reporter(turn.session, reporter_id) if reporter_id else []
    if not mine:
        turn.say("my.none")
        return
    lines = "\n".join(
        turn.t(
            "my.line",
            code=s.code,
            state=_state_label(turn, s),
            created=format_local(s.created_at),
        )
        # Each with its case page, when the service has a public address.
        + turn.page_line(s.code)
        for s in mine
    )
    turn.say("my.list", lines=lines)
