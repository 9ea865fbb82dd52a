"""/mydata, /forgetme and /withdraw: the rights the consent text promises, in the chat."""

from __future__ import annotations

from typing import Any

from backend.crypto import keys
from backend.services.privacy import (
    HeldData,
    erase_chat,
    erase_identity,
    held_data,
    withdraw_consent,
)
from backend.services.reporters import find_reporter
from backend.timeutil import format_local
from handlers.events import Button
from handlers.report import STEPS, Step
from handlers.turn import Turn

# Lines of a list /mydata shows (the newest).
SHOWN = 10
# The report steps a draft can be in: leaving one for a question about rights keeps the
# draft until the resident confirms.
_RESUME = "resume"


async def show_data(turn: Turn) -> None:
    """/mydata: what is held about this chat's reporter, with the two actions."""
    reporter_id = turn.conv.reporter_id or await find_reporter(
        turn.session, turn.channel, turn.chat_id
    )
    held = await held_data(turn.session, reporter_id) if reporter_id is not None else None
    _park(turn, "rights")
    buttons = RIGHTS.options(turn)
    if held is None:
        turn.say("mydata.none", buttons=buttons)
    else:
        turn.say("mydata.summary", buttons=buttons, **_summary(turn, held))


def _summary(turn: Turn, held: HeldData) -> dict[str, Any]:
    none = turn.t("mydata.nothing")
    consents = [
        turn.t(
            "mydata.consent_withdrawn" if c.withdrawn_at else "mydata.consent_line",
            date=format_local(c.granted_at),
            version=c.text_version,
            withdrawn=format_local(c.withdrawn_at) if c.withdrawn_at else "",
        )
        for c in held.consents
    ]
    reports = [
        turn.t(
            "mydata.report_line", code=r.code, state=turn.t(f"ticket_state.{r.state}"), unit=r.unit
        )
        + turn.page_line(r.code)
        for r in held.reports
    ]
    unsealings = [
        turn.t(
            "mydata.unseal_line",
            date=format_local(u.at),
            role=turn.t(f"role.{u.role}"),
            unit=u.unit or none,
        )
        for u in held.unsealings
    ]
    return {
        "pseudonym": held.pseudonym,
        "channel": turn.t(f"channel.{held.channel}") if held.channel else none,
        "phone": held.phone or none,
        "consents": _newest(turn, consents) or none,
        "reports": _newest(turn, reports) or none,
        "units": ", ".join(held.units) or none,
        "unseal_count": str(len(held.unsealings)),
        "unsealings": _newest(turn, unsealings),
    }


def _newest(turn: Turn, lines: list[str]) -> str:
    """The newest SHOWN lines, and how many earlier ones there are: the message stays
    within what a chat takes in one message (4,096 characters on Telegram)."""
    earlier = len(lines) - SHOWN
    shown = lines[-SHOWN:]
    if earlier > 0:
        shown.insert(0, turn.t("mydata.earlier", count=earlier))
    return "\n".join(shown)


def ask_forget(turn: Turn) -> None:
    """/forgetme: say what erasing does, then ask."""
    _park(turn, "forget")
    FORGET.prompt(turn)


def ask_withdraw(turn: Turn) -> None:
    """/withdraw: say what withdrawing does (and offers /forgetme), then ask."""
    _park(turn, "withdraw")
    WITHDRAW.prompt(turn)


def _park(turn: Turn, state: str) -> None:
    """Go to a rights question, remembering the report step a draft was in."""
    if turn.state not in ("idle", "rights", "forget", "withdraw"):
        turn.data[_RESUME] = turn.state
    turn.conv.state = state


def _has_draft(turn: Turn) -> bool:
    return _RESUME in turn.data


async def _back(turn: Turn) -> None:
    """Not now: back to the draft where it was, or to nothing."""
    resume = turn.data.pop(_RESUME, None)
    if resume in STEPS:
        turn.say("rights.kept")
        turn.conv.state = resume
        STEPS[resume].prompt(turn)
    else:
        turn.reset()
        turn.say("rights.kept")


class Rights(Step):
    """After /mydata: its two buttons."""

    name = "rights"

    def options(self, turn: Turn) -> list[Button]:
        return [
            self.button(turn, "forget", "rights.forget_button"),
            self.button(turn, "withdraw", "rights.withdraw_button"),
            self.button(turn, "back", "rights.back"),
        ]

    def prompt(self, turn: Turn) -> None:
        turn.say("rights.choose", buttons=self.options(turn))

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "forget":
            ask_forget(turn)
        elif value == "withdraw":
            ask_withdraw(turn)
        else:
            await _back(turn)
        return True


class _Confirm(Step):
    """A right's question: what it does, then confirm, switch or not now."""

    buttons: tuple[tuple[str, str], ...] = ()

    def options(self, turn: Turn) -> list[Button]:
        return [self.button(turn, value, key) for value, key in self.buttons]

    def prompt(self, turn: Turn) -> None:
        draft = turn.t("rights.draft_dropped_if") if _has_draft(turn) else ""
        turn.say(f"{self.name}.explain", buttons=self.options(turn), draft=draft)

    async def choose(self, turn: Turn, value: str) -> bool:
        if value == "forget":
            ask_forget(turn)
            return True
        if value != "confirm":
            await _back(turn)
            return True
        reporter_id = turn.conv.reporter_id or await find_reporter(
            turn.session, turn.channel, turn.chat_id
        )
        had_draft = _has_draft(turn)
        done = await self.carry_out(turn, reporter_id)
        turn.reset()
        if had_draft:
            turn.say("rights.draft_dropped")
        turn.say(done, remove_keyboard=True)
        return True

    async def carry_out(self, turn: Turn, reporter_id: int | None) -> str:
        """Do what was confirmed; the key of the message that says it is done."""
        raise NotImplementedError


class Forget(_Confirm):
    name = "forget"
    buttons = (("confirm", "forget.confirm"), ("back", "rights.back"))

    async def carry_out(self, turn: Turn, reporter_id: int | None) -> str:
        if reporter_id is not None:
            await erase_identity(turn.session, reporter_id, turn.services.now())
        else:
            await erase_chat(
                turn.session, turn.channel, keys().chat_key(turn.channel, turn.chat_id)
            )
        turn.conv.reporter_id = None
        turn.erased = True
        return "forget.done"


class Withdraw(_Confirm):
    name = "withdraw"
    buttons = (
        ("confirm", "withdraw.confirm"),
        ("forget", "withdraw.forget_instead"),
        ("back", "rights.back"),
    )

    async def carry_out(self, turn: Turn, reporter_id: int | None) -> str:
        withdrawn = reporter_id is not None and await withdraw_consent(
            turn.session, reporter_id, turn.services.now()
        )
        return "withdraw.done" if withdrawn else "withdraw.nothing"


RIGHTS = Rights()
FORGET = Forget()
WITHDRAW = Withdraw()
RIGHTS_STEPS: dict[str, Step] = {s.name: s for s in (RIGHTS, FORGET, WITHDRAW)}
