"""Parsing what residents type, and the message catalogues."""

from __future__ import annotations

import re

import pytest

from backend.services.reporters import normalise_phone
from backend.text import parse_point, search_key
from handlers.i18n import LANGUAGES, catalogue, pick_language, translate


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
