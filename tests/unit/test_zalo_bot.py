"""Zalo Bot Platform updates read as the dialogue's neutral events."""

from __future__ import annotations

from typing import Any

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
    for broken in ({"latitude": "north"}, "here", 42, {"latitude": 95, "longitude": 0}):
        got = read_update(update("message.location.received", location=broken))
        assert got is not None and got.location is None
    assert read_update({"ok": True, "result": {"event_name": "x"}}) is None
    assert read_update({"ok": True, "result": []}) is None
