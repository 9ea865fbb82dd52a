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
from backend.models import utcnow
from backend.services.media_store import MediaUnavailable
from backend.services.photos import read_photo
from backend.services.public_case import blurred, public_case, public_photo, visible_ticket
from backend.timeutil import format_local
from backend.web.app import MEDIA, SESSIONS

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


# --- the public case page ----------------------------------------------------------------


async def case_page(request: web.Request) -> web.Response:
    """GET /r/{code}: a report's public page, or the one 404."""
    async with request.app[SESSIONS]() as session:
        found = await visible_ticket(session, request.match_info["code"])
        if found is None:
            return public_not_found(request)
        case = await public_case(session, *found)
    response = render_public(request, "public_case.html", case=case, now=utcnow())
    # Hidden by staff: gone from the public at once, not after a cache's lifetime.
    response.headers["Cache-Control"] = "no-cache"
    return response


async def case_photo(request: web.Request) -> web.StreamResponse:
    """GET /r/{code}/photos/{id}.jpg (published) or …/{id}/blurred.jpg (evidence, blurred
    on the server): only photos of this visible report and its case. An evidence photo
    staff have not published is never sent as it is stored."""
    blur = request.match_info.get("variant") == "blurred"
    async with request.app[SESSIONS]() as session:
        found = await visible_ticket(session, request.match_info["code"])
        photo_id = int(request.match_info["id"]) if len(request.match_info["id"]) < 10 else 0
        photo = await public_photo(session, *found, photo_id) if found else None
    if photo is None or not (photo.public or (blur and photo.kind != "result")):
        return public_not_found(request)
    try:
        stored = await read_photo(request.app[MEDIA], photo.sha256)
    except MediaUnavailable as exc:
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "5"}) from exc
    if stored is None:
        return public_not_found(request)
    body, content_type = stored.data, stored.content_type
    if blur:
        body, content_type = await blurred(photo.sha256, stored.data), "image/jpeg"
    return web.Response(
        body=body,
        content_type=content_type,
        # Short-lived: a photo staff unpublish, or a case they hide, goes soon.
        headers={"Cache-Control": "public, max-age=60"},
    )


def mount_public(app: web.Application) -> None:
    app.router.add_get("/r/{code}", case_page)
    app.router.add_get("/r/{code}/photos/{id:[0-9]+}.jpg", case_photo)
    app.router.add_get("/r/{code}/photos/{id:[0-9]+}/{variant:blurred}.jpg", case_photo)
