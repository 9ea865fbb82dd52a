"""A resident's browser on the web report form, as the server sees it over HTTP: its own
cookie, the form's token read from the page, a multipart POST as a browser sends it."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from types import TracebackType

import aiohttp

# The place of the README's examples: in Phường Bỉm Sơn (Thanh Hóa), between wards for
# a database without boundaries (the form then asks which ward).
BIM_SON = ("20.0740", "105.9120")
BIM_SON_WARD = "14812"


@dataclass(frozen=True)
class Page:
    status: int
    location: str
    text: str

    @property
    def token(self) -> str:
        found = re.search(r'name="token" value="([^"]*)"', self.text)
        assert found is not None, self.text[:2000]
        return html.unescape(found.group(1))

    @property
    def problems(self) -> list[str]:
        return [
            html.unescape(m) for m in re.findall(r'<p class="problem"[^>]*>([^<]*)</p>', self.text)
        ]

    def ward_choices(self) -> list[str]:
        return re.findall(r'name="ward" value="([0-9]+)"', self.text)


class Resident:
    """One browser: a cookie jar, connecting from `source` (a loopback address)."""

    def __init__(
        self, base: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None
    ) -> None:
        self.base = base
        self.source = source
        self.headers = headers or {}
        self.http: aiohttp.ClientSession
        self.last: Page | None = None

    async def __aenter__(self) -> Resident:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(self.source, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            headers=self.headers,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.http.close()

    async def get(self, path: str) -> Page:
        async with self.http.get(f"{self.base}{path}", allow_redirects=False) as r:
            self.last = Page(r.status, r.headers.get("Location", ""), await r.text())
            return self.last

    async def open(self, lang: str = "") -> Page:
        return await self.get("/report" + (f"?lang={lang}" if lang else ""))

    async def send(
        self,
        fields: dict[str, str],
        photos: list[tuple[bytes, str]] = (),  # type: ignore[assignment]
        *,
        token: str | None = None,
        lang: str = "",
    ) -> Page:
        """Post the form with the token of the page last seen (unless given)."""
        form = aiohttp.FormData()
        if token is None and self.last is not None:
            token = self.last.token
        if token is not None:
            form.add_field("token", token)
        for name, value in fields.items():
            form.add_field(name, value)
        for data, content_type in photos or [(b"", "application/octet-stream")]:
            name = "photo.jpg" if data else ""
            form.add_field("photos", data, filename=name, content_type=content_type)
        url = f"{self.base}/report" + (f"?lang={lang}" if lang else "")
        async with self.http.post(url, data=form, allow_redirects=False) as r:
            self.last = Page(r.status, r.headers.get("Location", ""), await r.text())
            return self.last


def report_fields(**overrides: str) -> dict[str, str]:
    """A whole report at Bỉm Sơn, anonymous, with consent."""
    from backend.services.reporters import CONSENT_TEXT_VERSION

    fields = {
        "lat": BIM_SON[0],
        "lon": BIM_SON[1],
        "category": "dumping",
        "description": "Rác thải đổ thành đống bên đường, bốc mùi hôi.",
        "phone": "",
        "consent": CONSENT_TEXT_VERSION,
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


async def file_report(
    resident: Resident,
    photos: list[tuple[bytes, str]] = (),  # type: ignore[assignment]
    **overrides: str,
) -> Page:
    """Open the form, send it, choose Bỉm Sơn when asked for the ward; the last page."""
    await resident.open()
    page = await resident.send(report_fields(**overrides), photos)
    if page.status == 400 and page.ward_choices() and not page.problems:
        assert BIM_SON_WARD in page.ward_choices(), page.ward_choices()
        page = await resident.send(report_fields(ward=BIM_SON_WARD, **overrides))
    return page
