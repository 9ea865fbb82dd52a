"""Pages anyone may open, without a login: what they show is chosen here, never a
staff page with parts left out. Vietnamese, or English with ?lang=en."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from backend.i18n import Catalogues
from backend.timeutil import format_local

HERE = Path(__file__).resolve().parent
PUBLIC_TEXT = Catalogues(HERE / "locales", "public")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def language(request: web.Request) -> str:
    """The page's language: English when asked (?lang=en), else Vietnamese."""
    return "en" if request.query.get("lang") == "en" else "vi"


def public_translator(lang: str) -> Callable[..., str]:
    return lambda key, **p: PUBLIC_TEXT.translate(lang, key, **p)


def linker(lang: str) -> Callable[..., str]:
    """A link to a public path that keeps the page's language."""

    def link(path: str, **query: Any) -> str:
        params = {k: v for k, v in query.items() if v not in (None, "")}
        if lang == "en":
            params["lang"] = "en"
        return f"{path}?{urlencode(params)}" if params else path

    return link


def render_public(
    request: web.Request, name: str, status: int = 200, **context: Any
) -> web.Response:
    """A public template, with its language, translator and links."""
    lang = language(request)
    others = {k: v for k, v in request.query.items() if k != "lang"}
    if lang == "vi":
        others["lang"] = "en"
    other = f"{request.path}?{urlencode(others)}" if others else request.path
    html = _ENV.get_template(name).render(
        t=public_translator(lang),
        lang=lang,
        link=linker(lang),
        other_language=other,
        local=lambda dt: format_local(dt) if dt else "",
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def public_not_found(request: web.Request) -> web.Response:
    """The one answer for a code that is unknown or hidden: the same 404 for both."""
    return render_public(request, "public_notfound.html", status=404)
