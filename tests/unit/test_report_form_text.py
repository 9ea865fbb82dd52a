"""The web form's messages: each problem the core can say has words on the form, in
Vietnamese and English, with the same placeholders."""

from __future__ import annotations

import re

import pytest

from backend.web.public import PUBLIC_TEXT
from bot.web_form import PROBLEM_FIELDS


def report_keys(language: str) -> dict[str, str]:
    return {k: v for k, v in PUBLIC_TEXT.catalogue(language).items() if k.startswith("report.")}


def test_vietnamese_and_english_say_the_same_things() -> None:
    vi, en = report_keys("vi"), report_keys("en")
    assert vi.keys() == en.keys()
    for key in vi:
        assert set(re.findall(r"\{(\w+)\}", vi[key])) == set(re.findall(r"\{(\w+)\}", en[key]))


@pytest.mark.parametrize("language", ["vi", "en"])
def test_every_problem_the_core_says_has_words_on_the_form(language: str) -> None:
    keys = report_keys(language)
    for key in [*PROBLEM_FIELDS, "unexpected"]:
        assert f"report.problem.{key}" in keys, key
