"""Zalo Bot Platform updates read through the schema as the dialogue's neutral events."""

from __future__ import annotations

from typing import Any

import pytest

from bot.updates import Malformed
from bot.zalo_bot import read_update, to_incoming


def update(event: str, **message: Any) -> dict[str, Any]:
    body = {
        "from": {"id": "6ede9afa66b88fe6d6a9", "display_name": "Lan", "is_bot": False},
        "chat": {"id": "6ede9afa66b88fe6d6a9", "chat_type": "PRIVATE"},
        "message_id": "2d758cb5e222177a4e35",
        "date": 1763801234567,
        **message,
    }
    return {"ok": True, "result": {"message": body, "event_name": event}}


def test_text_and_commands() -> None:
    text = to_incoming(read_update(update("message.text.received", text="Rác ven sông")))  # type: ignore[arg-type]
    assert text is not None
    assert (text.channel, text.chat_id, text.update_id, text.kind, text.text) == (
        "zalo_bot",
        "6ede9afa66b88fe6d6a9",
        "2d758cb5e222177a4e35",
        "text",
        "Rác ven sông",
    )
    start = to_incoming(read_update(update("message.text.received", text="/start")))  # type: ignore[arg-type]
    assert start is not None and start.command == "start"


def test_images_are_left_for_the_adapter_to_fetch() -> None:
    got = read_update(
        update("message.image.received", photo_url="https://f.zdn.vn/p.jpg", caption="ảnh")
    )
    assert got is not None and got.photo_url == "https://f.zdn.vn/p.jpg"
    assert to_incoming(got) is None


def test_unsupported_messages_and_odd_locations_are_handled() -> None:
    odd = to_incoming(read_update(update("message.unsupported.received")))  # type: ignore[arg-type]
    assert odd is not None and odd.media_error == "not_image"
    for location in (
        {"latitude": 20.074, "longitude": 105.912},
        {"coordinates": {"latitude": "20.074", "longitude": "105.912"}},
        "20.074, 105.912",
    ):
        got = read_update(update("message.location.received", location=location))
        assert got is not None and got.location == (20.074, 105.912)
        incoming = to_incoming(got)
        assert incoming is not None and incoming.kind == "location"
    # A location in none of those shapes is no location: the update is refused.
    for broken in ({"latitude": "north"}, "here", 42, {"latitude": 95, "longitude": 0}):
        with pytest.raises(Malformed):
            read_update(update("message.location.received", location=broken))
    assert read_update({"ok": True, "result": {"event_name": "x"}}) is None
    with pytest.raises(Malformed):
        read_update({"ok": True, "result": []})


def test_the_bare_update_reads_as_the_wrapped_one() -> None:
    wrapped = update("message.text.received", text="xin chào")
    assert read_update(wrapped["result"]) == read_update(wrapped)


def test_a_message_from_nobody_is_refused() -> None:
    message = update("message.text.received", text="xin chào")["result"]["message"]
    del message["chat"]
    got = read_update({"message": message, "event_name": "message.text.received"})
    assert got is not None and got.chat_id == "6ede9afa66b88fe6d6a9"  # from "from"
    del message["from"]
    with pytest.raises(Malformed, match="message: no_chat"):
        read_update({"message": message})


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("chat", "6ede9afa66b88fe6d6a9", "message.chat: model_type"),
        ("message_id", ["2d75"], "message.message_id: string_type"),
        ("message_id", True, "message.message_id: string_type"),
        ("caption", None, ""),
        ("photo_url", "https://f.zdn.vn/" + "p" * 2048, "message.photo_url: string_too_long"),
        ("photo_url", "javascript:alert(1)", "message.photo_url: string_pattern_mismatch"),
        ("location", {"latitude": float("inf"), "longitude": 0}, "location.latitude"),
    ],
)
def test_an_update_that_does_not_fit_is_refused_naming_the_problem(
    field: str, value: Any, problem: str
) -> None:
    if not problem:  # a field the adapter does not read: anything goes
        assert read_update(update("message.text.received", text="Rác", **{field: value}))
        return
    with pytest.raises(Malformed) as refused:
        read_update(update("message.text.received", text="Rác ven sông", **{field: value}))
    assert problem in str(refused.value)
    assert "Rác" not in str(refused.value) and "6ede9afa" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("x" * 10_001, "string_too_long"), ("a\x00b", "nul_character"), (5, "string_type")],
)
def test_text_that_does_not_fit_is_refused(text: Any, problem: str) -> None:
    with pytest.raises(Malformed, match=f"message.text: {problem}"):
        read_update(update("message.text.received", text=text))


def test_an_integer_id_is_taken_as_its_digits() -> None:
    got = read_update(update("message.text.received", text="hi", message_id=1234567))
    assert got is not None and got.message_id == "1234567"
