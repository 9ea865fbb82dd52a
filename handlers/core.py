"""The dialogue's entry point: one Incoming event in, state changed and replies out."""

from __future__ import annotations

from dataclasses import replace

from backend.services.privacy import has_withdrawn
from handlers.abuse import answer_if_muted
from handlers.events import Incoming
from handlers.feedback import PREFIX, is_ticket_button, ticket_button
from handlers.i18n import LANGUAGES
from handlers.report import RENAMED_STEPS, Step, begin
from handlers.report import STEPS as REPORT_STEPS
from handlers.rights import RIGHTS_STEPS, ask_forget, ask_withdraw, show_data
from handlers.staff import group_event
from handlers.status import show_mine, show_status
from handlers.text_match import match_option
from handlers.turn import Turn

# Every state a chat can be in: the report flow's, and the questions about its data.
STEPS: dict[str, Step] = {**REPORT_STEPS, **RIGHTS_STEPS}
# The steps of a draft that take a photo (they override Step.photo; the others answer
# one as input they did not expect). Idle and addition take one by rules of their own:
# see backend.services.abuse.takes_photo, asked before a photo is downloaded.
DRAFT_PHOTO_STEPS = frozenset(
    name
    for name, s in STEPS.items()
    if type(s).photo is not Step.photo and name not in ("idle", "addition")
)


def remind(turn: Turn, problem: str | None = None) -> None:
    """Say what went wrong (if anything), then ask for the current step again."""
    STEPS[turn.state].remind(turn, problem)


async def _command(turn: Turn, event: Incoming) -> None:
    command = event.command or ""
    if command == "start":
        await begin(turn)
    elif command == "help":
        turn.say("help.commands")
        STEPS[turn.state].prompt(turn)
    elif command == "cancel":
        had_draft = turn.state != "idle"
        turn.reset()
        turn.say("cancel.done" if had_draft else "cancel.nothing", remove_keyboard=True)
    elif command == "lang":
        language = event.args.strip().lower()
        if language not in LANGUAGES:
            turn.say("lang.usage")
            return
        turn.conv.language = language
        turn.say("lang.set")
        STEPS[turn.state].prompt(turn)
    elif command == "status":
        await show_status(turn, event.args)
    elif command == "my":
        await show_mine(turn)
    elif command == "mydata":
        await show_data(turn)
    elif command == "forgetme":
        ask_forget(turn)
    elif command == "withdraw":
        ask_withdraw(turn)
    elif command in ("rate", "reopen"):
        if await _withdrawn(turn):
            return
        await _ticket_command(turn, event, command)
    elif command == "skip" and turn.state == "photos":
        await STEPS["photos"].choose(turn, "skip")
    else:
        remind(turn, "unknown_command")


async def _ticket_command(turn: Turn, event: Incoming, command: str) -> None:
    """/rate CODE N and /reopen CODE: what the buttons under an answer do, for channels
    without buttons."""
    words = event.args.split()
    if command == "rate" and len(words) == 2 and words[1] in {"1", "2", "3", "4", "5"}:
        data = f"{PREFIX}{words[0].upper()}|rate|{words[1]}"
    elif command == "reopen" and len(words) == 1:
        data = f"{PREFIX}{words[0].upper()}|reopen"
    else:
        turn.say(f"feedback.{command}_usage")
        return
    await ticket_button(turn, replace(event, kind="button", button=data))


async def _withdrawn(turn: Turn, callback_id: str | None = None) -> bool:
    """Whether the chat's reporter withdrew consent, and was told that nothing new is
    taken until they consent again."""
    if turn.conv.reporter_id is None or not await has_withdrawn(
        turn.session, turn.conv.reporter_id
    ):
        return False
    turn.ack(callback_id)
    turn.say("withdrawn.blocked")
    return True


async def _button(turn: Turn, step: Step, event: Incoming) -> None:
    state, _, value = (event.button or "").partition("|")
    allowed = {b.data for b in step.options(turn)}
    if state != turn.state or f"{state}|{value}" not in allowed:
        # A button from an earlier message, or data nobody offered: change nothing.
        turn.ack(event.callback_id, "button.stale")
        remind(turn, "button.stale")
        return
    turn.ack(event.callback_id)
    await step.choose(turn, value)


async def step(turn: Turn, event: Incoming) -> None:
    """Handle one event for the chat in turn; unexpected input gets the current step's help."""
    if event.group:
        await group_event(turn, event)
        return
    if turn.state in RENAMED_STEPS:
        turn.goto(RENAMED_STEPS[turn.state])
    if await answer_if_muted(turn, event):
        return
    current = STEPS[turn.state]
    if is_ticket_button(event):
        if await _withdrawn(turn, event.callback_id):
            return
        await ticket_button(turn, event)
        return
    if event.kind == "command":
        await _command(turn, event)
        return
    if event.kind == "button":
        await _button(turn, current, event)
        return
    handled = False
    if event.kind == "text" and event.text is not None:
        chosen = match_option(event.text, current.options(turn))
        if chosen is not None:
            handled = await current.choose(turn, chosen.data.partition("|")[2])
        else:
            handled = await current.text(turn, event.text)
    elif event.kind == "photo":
        handled = await current.photo(turn, event)
    elif event.kind == "location" and event.location is not None:
        handled = await current.location(turn, *event.location, source="gps")
    elif event.kind == "contact" and event.phone is not None:
        handled = await current.contact(turn, event.phone)
    elif event.kind == "geocoded":
        handled = await current.geocoded(turn, event)
    if not handled:
        remind(turn, f"unexpected.{turn.state}" if turn.state != "idle" else None)
