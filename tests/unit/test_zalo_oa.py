"""Zalo OA webhooks: the signature (with or without "mac="), checked over the raw bytes
with the event's own timestamp before anything parses them, and events read through the
schema as the dialogue's neutral events."""

from __future__ import annotations

import hashlib
import json

import pytest

from backend.web.bodies import BadJSON
from bot.updates import Malformed
from bot.zalo_oa import (
    CANDIDATES,
    BadSignature,
    read_event,
    signed_timestamp,
    to_incoming,
    verify,
)

APP_ID = "4312345678901234567"
SECRET = "oa-secret-key-for-tests"


def signed(event: dict[str, object], prefix: str = "mac=") -> tuple[dict[str, str], bytes]:
    body = json.dumps(event, ensure_ascii=False).encode()
    return sign(body, str(event["timestamp"]), prefix), body


def sign(body: bytes, timestamp: str, prefix: str = "mac=") -> dict[str, str]:
    """Zalo's signature, written out here rather than taken from the code under test."""
    mac = hashlib.sha256(APP_ID.encode() + body + timestamp.encode() + SECRET.encode())
    return {"X-ZEvent-Signature": prefix + mac.hexdigest()}


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
    file["message"] = {
        "msg_id": "m4",
        "attachments": [{"type": "file", "payload": {"url": "https://f.zalo/r.pdf"}}],
    }
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


def test_the_signature_is_checked_before_the_body_is_parsed() -> None:
    not_json = b'{"timestamp": "1763801234567", "event_name": [[[' + b"\xff" * 8
    with pytest.raises(BadSignature):
        verify({"X-ZEvent-Signature": "mac=" + "0" * 64}, not_json, APP_ID, SECRET)
    # Signed by Zalo, and only then found not to be JSON.
    headers = sign(not_json, "1763801234567")
    assert signed_timestamp(headers, not_json, APP_ID, SECRET) == "1763801234567"
    with pytest.raises(BadJSON):
        verify(headers, not_json, APP_ID, SECRET)
    # Nothing to sign with: no timestamp in the body.
    with pytest.raises(BadSignature):
        verify(sign(b"{}", ""), b"{}", APP_ID, SECRET)


def test_a_timestamp_given_as_a_number_is_signed_as_its_digits() -> None:
    event = {**text_event("xin chào"), "timestamp": 1763801234567}
    headers, body = signed(event)
    assert b'"timestamp": 1763801234567' in body
    assert verify(headers, body, APP_ID, SECRET)["timestamp"] == 1763801234567
    assert read_event(verify(headers, body, APP_ID, SECRET)) is not None


def test_the_signed_timestamp_must_be_the_events_own() -> None:
    event = text_event("xin chào")
    event["message"] = {"msg_id": "m1", "text": "hi", "timestamp": "1111111111111"}
    body = json.dumps(event).encode()
    # Signed with the message's timestamp, not the event's: refused once parsed.
    other = sign(body, "1111111111111")
    assert signed_timestamp(other, body, APP_ID, SECRET) == "1111111111111"
    with pytest.raises(BadSignature):
        verify(other, body, APP_ID, SECRET)
    assert verify(sign(body, "1763801234567"), body, APP_ID, SECRET)["message"]["text"] == "hi"


def test_a_timestamp_written_inside_a_text_is_no_candidate() -> None:
    # The resident typed a "timestamp" key: inside a JSON string its quotes are escaped.
    event = text_event('"timestamp": "2222222222222"')
    body = json.dumps(event).encode()
    assert b'\\"timestamp\\": \\"2222222222222\\"' in body
    with pytest.raises(BadSignature):
        signed_timestamp(sign(body, "2222222222222"), body, APP_ID, SECRET)
    assert signed_timestamp(sign(body, "1763801234567"), body, APP_ID, SECRET) == "1763801234567"


def test_only_the_first_few_timestamps_are_tried() -> None:
    # Each try hashes the whole body: a body full of "timestamp" keys costs a few hashes.
    keys = ", ".join(f'"timestamp": "{n}"' for n in range(1, CANDIDATES + 3))
    body = ("{" + keys + "}").encode()
    assert signed_timestamp(sign(body, str(CANDIDATES)), body, APP_ID, SECRET) == str(CANDIDATES)
    with pytest.raises(BadSignature):
        signed_timestamp(sign(body, str(CANDIDATES + 1)), body, APP_ID, SECRET)


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        ("attachments", 5, "message.attachments: list_type"),
        ("sender", "2512523625412515", "sender: model_type"),
        ("text", ["xin chào"], "message.text: string_type"),
        ("text", "x" * 10_001, "message.text: string_too_long"),
        ("msg_id", "m" * 65, "message.msg_id: string_pattern_mismatch"),
        ("latitude", "95", "latitude: less_than_equal"),
        ("latitude", "NaN", "latitude: float_type"),
        ("latitude", 1e308, "latitude: less_than_equal"),
        ("url", "file:///etc/passwd", "payload.url: string_pattern_mismatch"),
    ],
)
def test_an_event_that_does_not_fit_is_refused_naming_the_problem(
    where: str, value: object, problem: str
) -> None:
    event = text_event("Rác ở đầu ngõ")
    message = event["message"]
    assert isinstance(message, dict)
    if where == "sender":
        event["sender"] = value
    elif where in ("latitude", "url"):
        payload = (
            {"coordinates": {"latitude": value, "longitude": "105.9"}}
            if where == "latitude"
            else {"url": value}
        )
        kind = "location" if where == "latitude" else "image"
        message["attachments"] = [{"type": kind, "payload": payload}]
    else:
        message[where] = value
    with pytest.raises(Malformed) as refused:
        read_event(event)
    assert str(refused.value).endswith(problem)
    assert "Rác" not in str(refused.value) and "2512523625412515" not in str(refused.value)


def test_other_events_are_not_read_past_their_envelope() -> None:
    seen = {"event_name": "user_seen_message", "timestamp": "1", "message": 5}
    assert read_event(seen) is None
    with pytest.raises(Malformed):
        read_event({"event_name": "user_seen_message"})  # no timestamp
    with pytest.raises(Malformed):
        read_event({"event_name": "follow", "timestamp": "1"})  # nobody followed
