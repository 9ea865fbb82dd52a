"""The staff API against its own OpenAPI document, by schemathesis: `hotline serve` in a
process of its own, a signed-in staff session, every operation with generated valid and
invalid requests. No answer may be a server error, and every answer must match the
document (status, content type, headers, body)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.services.deadlines import Policies
from backend.services.workflow import Action, Actor, apply
from backend.web.openapi import document
from tests.e2e.conftest import free_port
from tests.e2e.staff_http import sign_in
from tests.factories import make_ticket, make_user

POLICIES = Policies.load()
PASSWORD = "a long and private passphrase"
# Every check that judges one answer. Left out: positive_data_acceptance (a request the
# schema allows may still break a rule of the procedure, e.g. claim a closed ticket, and
# is then rightly refused with a documented 409 or 422, or a body that is not an image
# with 415) and the checks of the stateful phase, which this API's document does not
# link.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
)


@asynccontextmanager
async def hotline_serve(
    database_url: str, tmp_path: Path, port: int
) -> AsyncIterator[list[dict[str, object]]]:
    """`hotline serve` as an operator runs it; yields its access log lines as they come."""
    env = {
        **os.environ,
        "HOTLINE_ENVIRONMENT": "development",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
        "HOTLINE_NOMINATIM_URL": "",
        "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
        "HOTLINE_STATS_DUTY_ENABLED": "false",
    }
    hotline = str(Path(sys.executable).parent / "hotline")
    process = await asyncio.create_subprocess_exec(
        hotline,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    access: list[dict[str, object]] = []

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").strip()
            record = json.loads(line) if line.startswith("{") else {}
            if "route" in record:  # an access line (every line is JSON)
                access.append(record)

    reader = asyncio.create_task(read())
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(120):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError("hotline serve did not start")
        yield access
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await reader


async def test_every_api_operation_matches_its_document(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        received = await make_ticket(s, chat_id="9501")
        # Another one, which the session sees in its lists.
        handled = await make_ticket(s, chat_id="9502")
        for action in ("classify", "assign"):
            await apply(s, handled, Action(action, competence="ward"), Actor.system(), POLICIES)
        admin = (await make_user(s, "admin", None, password=PASSWORD)).username
        code = received.code
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Auth by the document's security schemes (so the session cookie is also left out
    # on purpose, to see 401); the path's ticket pinned to one that exists, so that
    # requests get past the look-up.
    (tmp_path / "schemathesis.toml").write_text(
        "\n".join(
            (
                "[auth.openapi.session]",
                'api_key = "${HOTLINE_SESSION}"',
                "[auth.openapi.csrf]",
                'api_key = "${HOTLINE_CSRF}"',
                "[parameters]",
                f'"path.code" = "{code}"',
            )
        )
    )
    async with hotline_serve(database_url, tmp_path, port) as access:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            csrf = await sign_in(http, base, admin, PASSWORD)
        cookie = {c.key: c.value for c in jar}["hotline_session"]
        done = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/api/v1/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--max-examples",
            "60",
            "--no-color",
            cwd=tmp_path,
            env={**os.environ, "HOTLINE_SESSION": cookie, "HOTLINE_CSRF": csrf},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await done.communicate())[0].decode(errors="replace")
    assert done.returncode == 0, output
    by_route = Counter((str(a["route"]), int(str(a["status"]))) for a in access)
    total = sum(by_route.values())
    server_errors = sum(n for (_, status), n in by_route.items() if status >= 500)
    print(f"schemathesis: {total} requests, 5xx: {server_errors}", dict(by_route))
    assert server_errors == 0
    # The session held: every operation also answered with success, not only with 401.
    for path, methods in document()["paths"].items():
        assert by_route[(path, 200)] > 0, (path, methods, dict(by_route))
    assert total > 300


def test_the_document_names_every_api_route_and_no_other(tmp_path: Path) -> None:
    from backend.cli import build_app
    from backend.config import Settings

    app = build_app(Settings(environment="test", media_dir=tmp_path, nominatim_url=""))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert served == documented
