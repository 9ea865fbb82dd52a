"""Local stand-ins for Zalo OA's openapi and oauth servers, and a follower who messages.

openapi: POST /v3.0/oa/message/cs (JSON, `access_token` header) and POST
/v2.0/oa/upload/image (multipart `file`), answering HTTP 200 with {"error": 0 | code,
"message": …, "data": …}; an unknown or expired token gets -216. oauth: POST
/v4/oa/access_token (form app_id, refresh_token, grant_type; `secret_key` header), which
rotates the pair and answers -14020 for a refresh token used before. The user's photos
are served from /cdn/… like Zalo's CDN, and events reach the webhook signed as Zalo
signs them.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.zalo_oa import SIGNATURE_HEADER, expected_signature
from tests.fakes.server import Reader, SentLog, StandIn

OA_ID = "4318898190453811567"


@dataclass
class OAMessage:
    """A consultation message the OA sent, as the stand-in recorded it."""

    user_id: str
    text: str | None
    image: bytes | None
    message_id: str


@dataclass
class FakeZaloOA(StandIn):
    app_id: str = "1234567890123456789"
    oa_secret_key: str = "oa-secret-key-for-tests"
    app_secret: str = "app-secret-for-tests"
    access_token: str = "access-1"
    refresh_token: str = "refresh-1"
    # Every call to the oauth server: (refresh_token, secret_key header).
    refreshes: list[tuple[str, str]] = field(default_factory=list)
    # Every call to the openapi: (path, access_token header).
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sent: SentLog[OAMessage] = SentLog(lambda m: m.user_id)
        self._used_refresh: set[str] = set()
        self._uploads: dict[str, bytes] = {}
        self._cdn: dict[str, bytes] = {}
        self._errors: list[tuple[int, str]] = []
        self._ids = itertools.count(1)
        self.webhook_url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v3.0/oa/message/cs", self._send)
        app.router.add_post("/v2.0/oa/upload/image", self._upload)
        app.router.add_post("/v4/oa/access_token", self._refresh)
        app.router.add_get("/cdn/{name}", self._cdn_file)
        return await self._serve(app)

    # --- test controls -------------------------------------------------------------------

    def expire_access_token(self) -> None:
        """The current access token stops working (Zalo's answer becomes -216) until a
        refresh issues a new one."""
        self.access_token = ""

    def reuse_refresh_token(self) -> None:
        """Count the current refresh token as used (another client renewed with it)."""
        self._used_refresh.add(self.refresh_token)

    def fail_next_send(self, error: int, message: str) -> None:
        """The next message/cs call answers HTTP 200 with this non-zero error."""
        self._errors.append((error, message))

    def host_image(self, data: bytes) -> str:
        """Put a user's photo on the CDN; its URL."""
        name = f"{secrets.token_hex(8)}.jpg"
        self._cdn[name] = data
        return f"{self.url}/cdn/{name}"

    async def post_event(self, event: dict[str, Any], signature: str | None = "valid") -> int:
        """POST an event to the webhook, signed (or with the given signature, or none)."""
        body = json.dumps(event, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if signature == "valid":
            mac = expected_signature(self.app_id, body, str(event["timestamp"]), self.oa_secret_key)
            headers[SIGNATURE_HEADER] = f"mac={mac}"
        elif signature is not None:
            headers[SIGNATURE_HEADER] = signature
        async with self.client.post(self.webhook_url, data=body, headers=headers) as response:
            return response.status

    # --- wire protocol -------------------------------------------------------------------

    @staticmethod
    def _answer(error: int, message: str, data: dict[str, Any] | None = None) -> web.Response:
        body: dict[str, Any] = {"error": error, "message": message}
        if data is not None:
            body["data"] = data
        return web.json_response(body)

    def _token_ok(self, request: web.Request, path: str) -> bool:
        given = request.headers.get("access_token", "")
        self.calls.append((path, given))
        return bool(given) and given == self.access_token

    async def _send(self, request: web.Request) -> web.Response:
        if not self._token_ok(request, "message/cs"):
            return self._answer(-216, "Access token is invalid")
        if self._errors:
            return self._answer(*self._errors.pop(0))
        body = await request.json()
        user_id = str(body.get("recipient", {}).get("user_id", ""))
        message = body.get("message") or {}
        text = message.get("text")
        image = None
        attachment = message.get("attachment")
        if attachment is not None:
            elements = attachment["payload"]["elements"]
            image = self._uploads.get(str(elements[0].get("attachment_id")))
            if attachment["payload"]["template_type"] != "media" or image is None:
                return self._answer(-201, "attachment_id is invalid")
        if not user_id or (not text and image is None):
            return self._answer(-201, "Parameters are invalid")
        if text is not None and len(text) > 2000:
            return self._answer(-201, "text is too long")
        message_id = f"oa{next(self._ids):08d}"
        self.sent.add(OAMessage(user_id, text, image, message_id))
        return self._answer(0, "Success", {"message_id": message_id, "user_id": user_id})

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._token_ok(request, "upload/image"):
            return self._answer(-216, "Access token is invalid")
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return self._answer(-201, "file is missing")
        data = upload.file.read()
        if len(data) > 1_000_000:
            return self._answer(-210, "file is over 1 MB")
        attachment_id = secrets.token_hex(12)
        self._uploads[attachment_id] = data
        return self._answer(0, "Success", {"attachment_id": attachment_id})

    async def _refresh(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("refresh_token", ""))
        self.refreshes.append((given, request.headers.get("secret_key", "")))
        secret = request.headers.get("secret_key")
        if secret != self.app_secret or form.get("app_id") != self.app_id:
            return web.json_response({"error": -14001, "error_name": "Invalid app"})
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": -14003, "error_name": "Invalid grant type"})
        if given in self._used_refresh:
            return web.json_response(
                {
                    "error": -14020,
                    "error_name": "Refresh token was used",
                    "error_description": "The refresh token has been used before",
                }
            )
        if given != self.refresh_token:
            return web.json_response({"error": -14014, "error_name": "Invalid refresh token"})
        self._used_refresh.add(given)
        n = next(self._ids)
        self.access_token, self.refresh_token = f"access-r{n}", f"refresh-r{n}"
        return web.json_response(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_in": "90000",
            }
        )

    async def _cdn_file(self, request: web.Request) -> web.Response:
        data = self._cdn.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")


class ZaloFollower(Reader[OAMessage]):
    """A Zalo user who follows the OA and messages it."""

    def __init__(self, oa: FakeZaloOA, user_id: str) -> None:
        super().__init__(oa.sent, user_id)
        self.oa = oa
        self.user_id = user_id

    def event(self, name: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """An event as Zalo posts it, with a fresh msg_id."""
        event: dict[str, Any] = {
            "app_id": self.oa.app_id,
            "event_name": name,
            "timestamp": str(int(time.time() * 1000)),
        }
        if name == "follow":
            event.update(oa_id=OA_ID, follower={"id": self.user_id}, source="testing")
            return event
        # Opaque, as Zalo's are (it names neither the user nor the order).
        msg_id = secrets.token_hex(16)
        event.update(
            sender={"id": self.user_id},
            recipient={"id": OA_ID},
            user_id_by_app=f"app-{self.user_id}",
            message={"msg_id": msg_id, **(message or {})},
        )
        return event

    async def send(self, event: dict[str, Any]) -> dict[str, Any]:
        status = await self.oa.post_event(event)
        assert status == 200, status
        return event

    async def follow(self) -> dict[str, Any]:
        return await self.send(self.event("follow"))

    async def text(self, text: str) -> dict[str, Any]:
        return await self.send(self.event("user_send_text", {"text": text}))

    async def image(self, data: bytes) -> dict[str, Any]:
        url = self.oa.host_image(data)
        attachment = {"type": "image", "payload": {"thumbnail": url, "url": url}}
        return await self.send(self.event("user_send_image", {"attachments": [attachment]}))

    async def location(self, lat: float, lon: float) -> dict[str, Any]:
        coordinates = {"latitude": str(lat), "longitude": str(lon)}
        attachment = {"type": "location", "payload": {"coordinates": coordinates}}
        return await self.send(self.event("user_send_location", {"attachments": [attachment]}))

    async def file(self, name: str) -> dict[str, Any]:
        url = self.oa.host_image(b"%PDF-1.4")
        attachment = {"type": "file", "payload": {"url": url, "name": name, "size": "8"}}
        return await self.send(self.event("user_send_file", {"attachments": [attachment]}))
