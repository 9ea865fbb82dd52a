"""The update schemas: what the platforms send is read, extra fields are ignored, and what
does not fit is refused with a problem that names no value."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from telegram import Update

from bot.updates import (
    Malformed,
    TelegramUpdate,
    ZaloBotUpdate,
    ZaloPoint,
    read,
)


def message_update(**message: Any) -> dict[str, Any]:
    """A private message as the Bot API sends it (with fields we never read)."""
    return {
        "update_id": 734_220_118,
        "message": {
            "message_id": 52,
            "date": 1_790_000_000,
            "chat": {"id": 5_001_234_567, "type": "private", "first_name": "Lan"},
            "from": {
                "id": 5_001_234_567,
                "is_bot": False,
                "first_name": "Lan",
                "language_code": "vi",
                "is_premium": True,
            },
            **message,
        },
    }


def callback_update() -> dict[str, Any]:
    return {
        "update_id": 734_220_119,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": {"id": 5_001_234_567, "is_bot": False, "first_name": "Lan"},
            "chat_instance": "-81920",
            "data": "consent|yes",
            "message": {
                "message_id": 51,
                "date": 1_790_000_000,
                "chat": {"id": 5_001_234_567, "type": "private"},
                "text": "…",
            },
        },
    }


def test_a_message_reads_with_what_the_adapter_takes() -> None:
    update = read(
        TelegramUpdate,
        message_update(
            text="/start",
            entities=[{"type": "bot_command", "offset": 0, "length": 6}],
            link_preview_options={"is_disabled": True},
        ),
    )
    assert update.update_id == 734_220_118 and update.message is not None
    assert update.message.chat.id == 5_001_234_567 and update.message.chat.type == "private"
    assert update.message.sender is not None and update.message.sender.language_code == "vi"
    assert update.message.text == "/start" and update.callback_query is None


def test_positions_photos_and_buttons_read() -> None:
    venue = read(
        TelegramUpdate,
        message_update(
            location={"latitude": 20.074, "longitude": 105.912},
            venue={"location": {"latitude": 20, "longitude": 105}, "title": "Chợ", "address": ""},
        ),
    )
    assert venue.message is not None and venue.message.venue is not None
    assert venue.message.venue.location.pair == (20.0, 105.0)
    photo = read(
        TelegramUpdate,
        message_update(
            photo=[
                {"file_id": "A", "file_unique_id": "a", "width": 90, "height": 60},
                {
                    "file_id": "B",
                    "file_unique_id": "b",
                    "width": 900,
                    "height": 600,
                    "file_size": 9,
                },
            ],
            media_group_id="1390",
        ),
    )
    assert photo.message is not None and photo.message.photo is not None
    assert [p.file_id for p in photo.message.photo] == ["A", "B"]
    assert photo.message.photo[-1].file_size == 9
    button = read(TelegramUpdate, callback_update())
    assert button.callback_query is not None and button.callback_query.data == "consent|yes"
    assert button.callback_query.message is not None
    # A button on a message too old to read: only its chat comes (date 0, no text).
    old = callback_update()
    old["callback_query"]["message"] = {"message_id": 1, "date": 0, "chat": {"id": 7, "type": "x"}}
    got = read(TelegramUpdate, old).callback_query
    assert got is not None and got.message is not None and got.message.chat.id == 7


def test_polling_reads_ptbs_dicts_as_the_webhook_reads_the_json() -> None:
    for data in (
        message_update(text="xin chào"),
        message_update(location={"latitude": 20.074, "longitude": 105.912}),
        message_update(contact={"phone_number": "+84912345678", "first_name": "Lan"}),
        message_update(document={"file_id": "D", "file_unique_id": "d", "file_size": 5}),
        callback_update(),
    ):
        polled = Update.de_json(copy.deepcopy(data), None).to_dict()
        assert read(TelegramUpdate, polled) == read(TelegramUpdate, data)


def test_an_update_for_something_else_reads_as_neither_message_nor_button() -> None:
    update = read(TelegramUpdate, {"update_id": 5, "edited_message": {"anything": [1, {}]}})
    assert update.message is None and update.callback_query is None


def _at(path: str, value: Any) -> dict[str, Any]:
    update = message_update(text="Bãi rác ở ngõ 12, gọi 0912345678")
    *parents, last = path.split(".")
    node: Any = update
    for key in parents:
        node = node[key] if not key.isdigit() else node[int(key)]
    node[last] = value
    return update


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("update_id", float("inf"), "update_id: int_type"),
        ("update_id", 1.0, "update_id: int_type"),
        ("update_id", "734220118", "update_id: int_type"),
        ("update_id", True, "update_id: int_type"),
        ("update_id", -1, "update_id: greater_than_equal"),
        ("update_id", 10**400, "update_id: less_than_equal"),
        ("message.chat", "5001234567", "message.chat: model_type"),
        ("message.chat.id", 2**60, "message.chat.id: less_than_equal"),
        ("message.chat.type", None, "message.chat.type: string_type"),
        ("message.from.language_code", ["vi"], "message.from.language_code: string_type"),
        ("message.from.language_code", "v" * 36, "message.from.language_code: string_too_long"),
        ("message.text", "x" * 4097, "message.text: string_too_long"),
        ("message.text", "a\x00b", "message.text: nul_character"),
        ("message.text", "\ud800", "message.text: string_unicode"),
        ("message.location", {"latitude": 91, "longitude": 0}, "latitude: less_than_equal"),
        ("message.location", {"latitude": float("nan"), "longitude": 0}, "finite_number"),
        ("message.location", {"latitude": "20.0", "longitude": 1.0}, "latitude: float_type"),
        ("message.location", {"latitude": 1e308, "longitude": 1.0}, "less_than_equal"),
        ("message.photo", 5, "message.photo: list_type"),
        ("message.photo", [{"file_id": "A"}] * 33, "message.photo: too_long"),
        ("message.photo", [{"file_id": ""}], "message.photo.0.file_id: string_too_short"),
        ("message.document", {"file_id": "D", "file_size": -1}, "file_size: greater_than_equal"),
        ("message.contact", {"phone_number": 912345678}, "phone_number: string_type"),
    ],
)
def test_what_does_not_fit_is_refused_naming_the_place_and_kind(
    path: str, value: Any, problem: str
) -> None:
    with pytest.raises(Malformed) as refused:
        read(TelegramUpdate, _at(path, value))
    said = str(refused.value)
    assert problem in said
    # No value of the update in the problem, which is logged.
    for data in ("0912345678", "Bãi rác", "5001234567", "734220118", "vi'"):
        assert data not in said


@pytest.mark.parametrize("data", [None, [], "update", 5, {"update_id": None}])
def test_what_is_not_an_update_at_all_is_refused(data: Any) -> None:
    with pytest.raises(Malformed):
        read(TelegramUpdate, data)


def test_a_button_is_refused_without_its_sender_or_with_data_not_ours() -> None:
    without = callback_update()
    del without["callback_query"]["from"]
    with pytest.raises(Malformed, match=r"callback_query\.from: missing"):
        read(TelegramUpdate, without)
    long = callback_update()
    long["callback_query"]["data"] = "x" * 65
    with pytest.raises(Malformed, match=r"callback_query\.data: string_too_long"):
        read(TelegramUpdate, long)


def test_the_problem_counts_the_others() -> None:
    data = message_update(text=5)
    data["update_id"] = "x"
    with pytest.raises(Malformed, match=r"^update_id: int_type \(\+1 more\)$"):
        read(TelegramUpdate, data)


@pytest.mark.parametrize(
    ("given", "pair"),
    [
        ({"latitude": "20.074", "longitude": "105.912"}, (20.074, 105.912)),
        ({"latitude": " -8.5 ", "longitude": 115}, (-8.5, 115.0)),
        ({"latitude": 20.074, "longitude": 105.912}, (20.074, 105.912)),
    ],
)
def test_zalo_positions_may_be_decimal_text(given: dict[str, Any], pair: Any) -> None:
    assert read(ZaloPoint, given).pair == pair


@pytest.mark.parametrize(
    "latitude", ["nan", "inf", "1e400", "1e2", "0x10", "20,5", "1" * 40, "", True, None, [20]]
)
def test_zalo_positions_refuse_anything_but_a_decimal(latitude: Any) -> None:
    with pytest.raises(Malformed, match="latitude"):
        read(ZaloPoint, {"latitude": latitude, "longitude": "105.9"})


def test_a_zalo_bot_update_without_a_message_reads_as_empty() -> None:
    assert read(ZaloBotUpdate, {"event_name": "bot.added"}).message is None
    with pytest.raises(Malformed, match="event_name: string_type"):
        read(ZaloBotUpdate, {"event_name": 5})
