"""Open311 against `hotline serve` processes: a key printed by `hotline open311-key`, the
`georeport` client from PyPI reading back what was posted in JSON and XML, and a partner
key's limits kept by two processes on one database."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import requests
from georeport import GeoReport  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Ticket
from tests.e2e.open311_http import FORMATS, IN_BIM_SON, ROOT, errors_of
from tests.scaleout.cluster import Cluster

HOTLINE = Path(sys.executable).parent / "hotline"


def _env(database_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_NOMINATIM_URL": "",
        "HOTLINE_MEDIA_DIR": str(tmp_path / "media"),
        "HOTLINE_MAP_TILE_URL": "",
        "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
        "HOTLINE_STATS_DUTY_ENABLED": "false",
        **{f"HOTLINE_{k.upper()}": v for k, v in settings.items()},
    }


async def _cli_key(env: dict[str, str], province: str, name: str) -> str:
    """The key `hotline open311-key` prints (on the line of its own after the title)."""
    proc = await asyncio.create_subprocess_exec(
        str(HOTLINE),
        "open311-key",
        "--province",
        province,
        "--name",
        name,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == f"Open311 api_key for {name} (province {province}):"
    return lines[1]


async def _clear_of_window_ends(*windows: int, margin: float = 15.0) -> None:
    """Wait while a limit's window (fixed, in epoch seconds) ends within margin: counts
    taken on both sides of its end would be two windows' counts."""
    now = time.time()
    wait = max((margin - (window - now % window) for window in windows), default=0.0)
    if wait > 0:
        await asyncio.sleep(wait + 0.5)


@pytest.fixture
async def cluster(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    limits: dict[str, str] = getattr(request, "param", {})
    started = Cluster(tmp_path, _env(database_url, tmp_path, **limits), n=2)
    try:
        await started.start()
        yield started
    finally:
        await started.stop()


async def test_the_georeport_client_reads_back_a_posted_request(
    cluster: Cluster, database_url: str, tmp_path: Path
) -> None:
    server = cluster.servers[0]
    key = await _cli_key(_env(database_url, tmp_path), "38", "Cổng PAHT Thanh Hóa")
    root = f"{server.url}{ROOT}"
    form = {
        "api_key": key,
        "service_code": "wastewater",
        **IN_BIM_SON,
        "description": "Nước thải đổ ra kênh lúc nửa đêm",
        "attribute[nature]": "recurring",
    }
    posted = await asyncio.to_thread(requests.post, f"{root}/requests.json", data=form, timeout=10)
    assert posted.status_code == 200, posted.text
    code = posted.json()[0]["service_request_id"]

    def read(fmt: str) -> tuple[list[dict[str, str]], dict[str, str], list[dict[str, str]], object]:
        client = GeoReport(root, jurisdiction="38", api_key=key, output_format=fmt)
        services = client.get_service_list()
        definition = client.get_service_definition("wastewater")
        listed = client.get_service_requests(service_code="wastewater", status="open")
        one = client.get_service_request(code)
        return services, definition, listed, one

    for fmt in FORMATS:
        services, definition, listed, one = await asyncio.to_thread(read, fmt)
        assert "wastewater" in [s["service_code"] for s in services]
        assert definition["service_code"] == "wastewater"
        # xmltodict gives one element as a dict, several as a list.
        rows = listed if isinstance(listed, list) else [listed]
        assert [r["service_request_id"] for r in rows] == [code]
        assert isinstance(one, dict)
        assert one["service_request_id"] == code
        assert one["status"] == "open"
        assert one["service_code"] == "wastewater"
        # The client reads without its key (it sends the key only to post): the words
        # are the poster's, not the public's.
        assert one["description"] in ("", None)
        # The other server process answers the same.
        other = GeoReport(f"{cluster.servers[1].url}{ROOT}", output_format=fmt)
        again = await asyncio.to_thread(other.get_service_request, code)
        assert again["service_request_id"] == code and again["description"] in ("", None)
    # With its key, the partner that posted it reads its own words.
    own = await asyncio.to_thread(
        requests.get, f"{root}/requests/{code}.json", params={"api_key": key}, timeout=10
    )
    assert own.json()[0]["description"] == "Nước thải đổ ra kênh lúc nửa đêm"


@pytest.mark.parametrize(
    "cluster",
    [{"open311_posts_per_hour": "3", "open311_reads_per_minute": "5"}],
    indirect=True,
)
async def test_a_keys_limits_hold_across_two_processes(
    cluster: Cluster,
    database_url: str,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    env = _env(database_url, tmp_path)
    key, other_key = await _cli_key(env, "38", "Portal A"), await _cli_key(env, "38", "Portal B")
    form = {"api_key": key, "service_code": "noise", **IN_BIM_SON}
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as http:

        async def post(url: str, fmt: str, fields: dict[str, str]) -> int:
            async with http.post(f"{url}{ROOT}/requests.{fmt}", data=fields) as r:
                body = await r.read()
                if r.status == 429:
                    assert errors_of(fmt, body) == [(429, "too many requests: try again later")]
                return r.status

        await _clear_of_window_ends(60, 3600)
        # Six at once, three to each process: three are taken, three refused.
        tries = [post(cluster.servers[i % 2].url, FORMATS[i % 2], form) for i in range(6)]
        statuses.update(await asyncio.gather(*tries))
        assert statuses == {200: 3, 429: 3}
        # Another partner's key has its own count.
        assert await post(cluster.servers[1].url, "json", {**form, "api_key": other_key}) == 200
        # Reads: five a minute per address without a key, whichever process answers.
        reads = []
        for i in range(6):
            url = f"{cluster.servers[i % 2].url}{ROOT}/services.xml"
            async with http.get(url) as r:
                reads.append(r.status)
                if r.status == 429:
                    assert errors_of("xml", await r.read())[0][0] == 429
        assert reads == [200] * 5 + [429]
        # A key's reads are counted for the key, apart from the address's.
        async with http.get(
            f"{cluster.servers[0].url}{ROOT}/requests.json", params={"api_key": key}
        ) as r:
            assert r.status == 200
    async with sessions() as s:
        stored = await s.scalar(select(func.count()).where(Ticket.channel == "open311"))
    assert stored == 4
