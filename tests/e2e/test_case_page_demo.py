"""`hotline serve --demo` (a process of its own) without HOTLINE_PUBLIC_URL: the chat's
links to case pages lead to the address the demo serves, and the page opens there."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.e2e.conftest import free_port
from tests.factories import make_ticket


async def test_the_demo_links_to_its_own_case_pages(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s, s.begin():
        code = (await make_ticket(s, chat_id="7501")).code
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "HOTLINE_PUBLIC_URL"}
    env |= {"HOTLINE_DATABASE_URL": database_url, "HOTLINE_MEDIA_DIR": str(tmp_path / "media")}
    hotline = str(Path(sys.executable).parent / "hotline")
    server = await asyncio.create_subprocess_exec(
        hotline,
        "serve",
        "--demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/demo/chat") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the demo did not start")
            async with http.post(f"{base}/demo/api/send", json={"text": f"/status {code}"}) as r:
                assert r.status == 200
            said = ""
            for _ in range(150):
                async with http.get(f"{base}/demo/api/messages") as r:
                    said = " ".join(str(m.get("text")) for m in (await r.json())["messages"])
                if code in said:
                    break
                await asyncio.sleep(0.2)
            assert f"{base}/r/{code}" in said, said
            async with http.get(f"{base}/r/{code}") as r:
                assert r.status == 200 and code in await r.text()
    finally:
        server.terminate()
        await server.wait()
