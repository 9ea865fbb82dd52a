"""Parsing what residents type, and the message catalogues."""

from __future__ import annotations

import re

import pytest

from backend.services.notify import notice
from backend.services.reporters import normalise_phone
from backend.text import parse_point, search_key
from bot.outbox import split_text
from handlers.events import Reply
from handlers.i18n import LANGUAGES, catalogue, pick_language, translate
from handlers.notices import render_payload


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20.0740, 105.9120", (20.074, 105.912)),
        ("20.0740 105.9120", (20.074, 105.912)),
        (" -8.5;115.2 ", (-8.5, 115.2)),
        ("95, 10", None),
        ("phố Huế", None),
        ("", None),
    ],
)
def test_parse_point(text: str, expected: tuple[float, float] | None) -> None:
    assert parse_point(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0912345678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("0243 825 3232", "+842438253232"),
        ("12345", None),
        ("+1 202 555 0143", None),
        ("gọi tôi", None),
    ],
)
def test_normalise_phone(text: str, expected: str | None) -> None:
    assert normalise_phone(text) == expected


def test_search_key_folds_tones() -> None:
    assert search_key("Phường Bỉm Sơn") == "phuongbimson"
    assert search_key("Đắk Lắk") == "daklak"


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    vi, en = catalogue("vi"), catalogue("en")
    assert set(vi) == set(en)
    for key in vi:
        fields = re.compile(r"\{(\w+)\}")
        assert set(fields.findall(vi[key])) == set(fields.findall(en[key])), key
    assert LANGUAGES == ("vi", "en")


def test_language_choice() -> None:
    assert pick_language("en-GB") == "en"
    assert pick_language("vi") == "vi"
    assert pick_language(None) == "vi"
    assert (
        translate("en", "status.not_found", code="X")
        == "No report has the code X. Please check it."
    )


def test_long_text_is_cut_at_line_ends_within_the_limit() -> None:
    text = "\n".join(f"dòng {n:03d} " + "x" * 40 for n in range(100))
    parts = split_text(text, 2000)
    assert all(len(p) <= 2000 for p in parts) and len(parts) == 3
    assert "\n".join(parts) == text
    assert split_text("ngắn", 2000) == ["ngắn"]
    # One line longer than the limit is cut where it must be.
    assert [len(p) for p in split_text("y" * 4500, 2000)] == [2000, 2000, 500]


def test_answer_buttons_become_commands_on_a_channel_without_buttons() -> None:
    payload = notice(
        "notify.answered",
        "vi",
        {"code": "38-2611-00007", "result": "Đã thu dọn.", "until": "01/12/2026"},
        buttons=[
            [{"label": f"{n}⭐", "data": f"t|38-2611-00007|rate|{n}"} for n in range(1, 6)],
            [{"key": "feedback.not_fixed", "data": "t|38-2611-00007|reopen"}],
        ],
    )
    with_buttons = render_payload(payload)
    as_text = render_payload(payload, inline_buttons=False)
    assert isinstance(with_buttons, Reply) and isinstance(as_text, Reply)
    assert len(with_buttons.buttons[0]) == 5 and "/rate" not in with_buttons.text
    assert as_text.buttons == ()
    assert as_text.text.startswith(with_buttons.text)
    assert "/rate 38-2611-00007 5" in as_text.text and "/reopen 38-2611-00007" in as_text.text
    english = render_payload({**payload, "language": "en"}, inline_buttons=False)
    assert isinstance(english, Reply) and "stars" in english.text
