"""Zalo OA webhooks: the signature (with or without "mac="), and events read as the
dialogue's neutral events."""

from __future__ import annotations

import hashlib
import json

import pytest

from bot.zalo_oa import BadSignature, read_event, to_incoming, verify

APP_ID = "4312345678901234567"
SECRET = "oa-secret-key-for-tests"


def signed(event: dict[str, object], prefix: str = "mac=") -> tuple[dict[str, str], bytes]:
    body = json.dumps(event, ensure_ascii=False).encode()
    mac = hashlib.sha256(
        APP_ID.encode() + body + str(event["timestamp"]).encode() + SECRET.encode()
    ).hexdigest()
    return {"X-ZEvent-Signature": prefix + mac}, body


def text_event(text: str, msg_id: str = "m1") -> dict[str, object]:
    return {
        "app_id": APP_ID,
        "user_id_by_app": "552177279717587730",
        "event_name": "user_send_text",
        "timestamp": "1763801234567",
        "sender": {"id": "2512523625412515"},
        "recipient": {"id": "579745863508352884"},
        "message": {"msg_id": msg_id, "text": text},
    }


@pytest.mark.parametrize("prefix", ["mac=", ""])
def test_a_signed_event_is_accepted_with_or_without_the_prefix(prefix: str) -> None:
    headers, body = signed(text_event("xin chào"), prefix)
    assert verify(headers, body, APP_ID, SECRET)["message"]["text"] == "xin chào"


def test_a_wrong_or_missing_signature_is_refused() -> None:
    headers, body = signed(text_event("xin chào"))
    tampered = body.replace("xin chào".encode(), "tạm biệt".encode())
    with pytest.raises(BadSignature):
        verify(headers, tampered, APP_ID, SECRET)
    with pytest.raises(BadSignature):
        verify(headers, body, APP_ID, "another-secret")
    with pytest.raises(BadSignature):
        verify({}, body, APP_ID, SECRET)


def test_events_become_the_dialogues_events() -> None:
    text = to_incoming(read_event(text_event("Rác ở đầu ngõ")))  # type: ignore[arg-type]
    assert text is not None
    assert (text.channel, text.chat_id, text.update_id, text.kind, text.text) == (
        "zalo_oa",
        "2512523625412515",
        "m1",
        "text",
        "Rác ở đầu ngõ",
    )
    command = to_incoming(read_event(text_event("/status 38-2611-00001")))  # type: ignore[arg-type]
    assert command is not None and (command.command, command.args) == ("status", "38-2611-00001")

    location = text_event("")
    location["event_name"] = "user_send_location"
    location["message"] = {
        "msg_id": "m2",
        "attachments": [
            {
                "type": "location",
                "payload": {"coordinates": {"latitude": "20.074", "longitude": "105.912"}},
            }
        ],
    }
    event = read_event(location)
    assert event is not None and event.location == (20.074, 105.912)
    incoming = to_incoming(event)
    assert incoming is not None and incoming.kind == "location"

    image = text_event("")
    image["event_name"] = "user_send_image"
    image["message"] = {
        "msg_id": "m3",
        "attachments": [
            {"type": "image", "payload": {"url": "https://f.zalo/x.jpg", "thumbnail": "t"}}
        ],
    }
    event = read_event(image)
    assert event is not None and event.image_url == "https://f.zalo/x.jpg"
    assert to_incoming(event) is None  # the adapter downloads it first

    file = text_event("")
    file["event_name"] = "user_send_file"
    file["message"] = {"msg_id": "m4", "attachments": [{"type": "file", "payload": {"url": "u"}}]}
    incoming = to_incoming(read_event(file))  # type: ignore[arg-type]
    assert incoming is not None and incoming.media_error == "not_image"

    follow = {"event_name": "follow", "timestamp": "1", "follower": {"id": "2512523625412515"}}
    incoming = to_incoming(read_event(follow))  # type: ignore[arg-type]
    assert incoming is not None and incoming.command == "start"

    assert read_event({"event_name": "user_seen_message", "timestamp": "1"}) is None
    broken = text_event("")
    broken["message"] = {"msg_id": "m5", "attachments": [{"type": "location", "payload": {}}]}
    event = read_event(broken)
    assert event is not None and event.location is None
