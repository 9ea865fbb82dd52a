"""Words for the notices that services queue (see backend.services.notify)."""

from __future__ import annotations

from typing import Any

from handlers.case_page import with_case_page
from handlers.events import Button, Edit, Outgoing, Reply, outgoing_from_payload
from handlers.feedback import PREFIX as TICKET_BUTTON
from handlers.i18n import translate

# The notices to reporters (backend.services.notify.tell_reporters) start so.
REPORTER_NOTICE = "notify."


def render_payload(
    payload: dict[str, Any], inline_buttons: bool = True, case_base: str = ""
) -> Outgoing:
    """An outbox payload as the message to send: replies and acks as stored, notices
    worded in their reader's language. Without inline buttons, a notice's ticket
    buttons (rate, reopen) become the commands that do the same. A notice to a reporter
    about their code links to the case page on case_base (the public address)."""
    if payload.get("type") not in ("notice", "edit"):
        return outgoing_from_payload(payload)
    language = str(payload.get("language") or "vi")
    params = dict(payload.get("params") or {})
    for name in [p for p in params if p.endswith("_key")]:
        # A parameter that is itself a message (a rejection reason, say).
        params[name.removesuffix("_key")] = translate(language, str(params.pop(name)))
    buttons = tuple(
        tuple(
            Button(
                label=str(b["label"]) if "label" in b else translate(language, str(b["key"])),
                data=str(b["data"]),
            )
            for b in row
        )
        for row in payload.get("buttons") or ()
    )
    text = translate(language, str(payload["key"]), **params)
    # "linked" false: the case was hidden from the public when the notice was queued.
    if str(payload["key"]).startswith(REPORTER_NOTICE) and payload.get("linked", True):
        text = with_case_page(text, case_base, params.get("code"), language)
    if buttons and not inline_buttons:
        codes = {
            b.data.split("|")[1] for row in buttons for b in row if b.data.startswith(TICKET_BUTTON)
        }
        for code in sorted(codes):
            text = f"{text}\n\n{translate(language, 'feedback.by_text', code=code)}"
        buttons = ()
    if payload.get("type") == "edit":
        return Edit(str(payload["message_id"]), text, caption=bool(payload.get("caption")))
    return Reply(text=text, buttons=buttons, photo_sha256=payload.get("photo_sha256"))
