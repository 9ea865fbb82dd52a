"""After the answer: the reporter rates it (1–5) or says it is not fixed (reopen)."""

from __future__ import annotations

from backend.services.workflow import (
    Action,
    Actor,
    WorkflowError,
    apply,
    find_ticket,
    lock_tickets,
    rate,
)
from handlers.events import Incoming
from handlers.turn import Turn

PREFIX = "t|"


def is_ticket_button(event: Incoming) -> bool:
    """Buttons on notices about a ticket: "t|<code>|rate|<n>" or "t|<code>|reopen"."""
    return event.kind == "button" and (event.button or "").startswith(PREFIX)


async def ticket_button(turn: Turn, event: Incoming) -> None:
    _, code, action, *rest = [*(event.button or "").split("|"), "", ""][:4]
    ticket = await find_ticket(turn.session, code, lock=True)
    reporter_id = turn.conv.reporter_id
    actor = Actor(role="reporter", reporter_id=reporter_id)
    try:
        if ticket is None or reporter_id is None:
            raise WorkflowError("out_of_scope")
        if action == "rate" and rest[0] in ("1", "2", "3", "4", "5"):
            await rate(turn.session, ticket, int(rest[0]), actor, now=turn.services.now())
            turn.ack(event.callback_id)
            turn.say("feedback.thanks", rating=int(rest[0]), code=code, page=code)
        elif action == "reopen":
            # A report merged into a case is reopened through the case, which each of
            # its reporters may reopen; the service tells them all.
            case = ticket
            if ticket.case_id is not None and ticket.reporter_id == reporter_id:
                found = await lock_tickets(turn.session, [ticket.case_id])
                case = found[0] if found else ticket
            if case.reopen_count > 0 and case.state not in ("answered", "closed"):
                # Someone on the case reopened it already: it is being handled again.
                turn.ack(event.callback_id)
                turn.say("feedback.already_reopened", code=code, page=code)
                return
            await apply(
                turn.session,
                case,
                Action("reopen", note="not fixed (reporter)"),
                actor,
                turn.services.policies,
                now=turn.services.now(),
            )
            turn.ack(event.callback_id)
        else:
            raise WorkflowError("unknown_action", action)
    except WorkflowError as exc:
        turn.ack(event.callback_id, "button.stale")
        key = "feedback.window_over" if exc.code == "reopen_window_over" else "feedback.unavailable"
        # The page of a report whose time to reopen is over still says how it ended.
        turn.say(key, code=code, page=code if key == "feedback.window_over" else None)
