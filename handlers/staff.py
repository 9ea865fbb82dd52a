"""Staff groups: `/link <code>` ties a group to a unit; a card's button claims a ticket."""

from __future__ import annotations

from backend.services.cards import CLAIM_PREFIX
from backend.services.staff_groups import claim_from_card, link_group
from handlers.events import Ack, Incoming
from handlers.turn import Turn


async def group_event(turn: Turn, event: Incoming) -> None:
    """Everything that happens in a group: nothing else than these two is answered."""
    if event.kind == "command" and event.command == "link":
        unit = await link_group(turn.session, turn.channel, turn.chat_id, event.args)
        if unit is None:
            turn.say("group.bad_code")
        else:
            turn.say("group.linked", unit=unit.name)
    elif event.kind == "button" and (event.button or "").startswith(CLAIM_PREFIX):
        code = (event.button or "").removeprefix(CLAIM_PREFIX)
        outcome = await claim_from_card(
            turn.session,
            turn.channel,
            turn.chat_id,
            event.sender_id,
            code,
            turn.services.policies,
        )
        # The answer pops up for the one who pressed; the card changes only on a claim.
        if event.callback_id is not None:
            turn.out.append(Ack(event.callback_id, turn.t(outcome.key, **outcome.params)))
    elif event.kind == "button" and event.callback_id is not None:
        turn.ack(event.callback_id, "button.stale")
