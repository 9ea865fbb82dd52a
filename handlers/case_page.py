"""The public case page's link, added to every message to a reporter that gives a code."""

from __future__ import annotations

from handlers.i18n import translate


def case_page_url(base: str, code: str, language: str) -> str:
    """The case page of a code on the service's public address, in the reader's language."""
    return f"{base.rstrip('/')}/r/{code}" + ("?lang=en" if language == "en" else "")


def case_page_line(base: str, code: str, language: str) -> str:
    """For a line of a list that names a code: its case page on a line of its own, or
    nothing without a public address."""
    return f"\n  {case_page_url(base, code, language)}" if base else ""


def with_case_page(text: str, base: str, code: str | None, language: str) -> str:
    """text, then the line with the case page's link; text as it is without a public
    address (the link would lead nowhere) or a code."""
    return text + case_page_link(base, code, language)


def case_page_link(base: str, code: str | None, language: str) -> str:
    """What with_case_page adds to a message: the case page's link on a paragraph of its
    own, or nothing."""
    if not base or not code:
        return ""
    line = translate(language, "case_page.link", url=case_page_url(base, code, language))
    return f"\n\n{line}"
