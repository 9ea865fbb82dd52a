"""The web report form: whole reports (open the form, send it, choose the ward, get the
code) per second and their latency, against `hotline serve` on SQLite.

Each report is what a resident's browser does: GET /report, POST with one photo (or
none), and, the database having no ward boundaries, a second POST with the ward. The
limits are raised so that only the work is measured; the photo is sanitised in the
process pool as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common, when run as a script

import bench.common  # noqa: E402, F401 - the run's data key
from bench.intake import free_port, pct  # noqa: E402

CONSENT = "2026-12-v3"
TOKEN = re.compile(r'name="token" value="([^"]*)"')


def photo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1600, 1200), "green").save(buf, "JPEG")
    return buf.getvalue()


async def one_report(base: str, picture: bytes | None, n: int) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/report") as r:
            page = await r.text()
        fields = {
            "lat": "20.0740",
            "lon": "105.9120",
            "category": ("dumping", "noise", "burning", "debris")[n % 4],
            "description": f"Phản ánh thử số {n}: rác đổ bên đường.",
            "consent": CONSENT,
        }
        for ward in (None, "14812"):
            form = aiohttp.FormData()
            found = TOKEN.search(page)
            assert found is not None
            form.add_field("token", found.group(1))
            for name, value in fields.items():
                form.add_field(name, value)
            if ward:
                form.add_field("ward", ward)
            data = picture if picture and ward is None else b""
            form.add_field("photos", data, filename="p.jpg" if data else "")
            async with http.post(f"{base}/report", data=form, allow_redirects=False) as r:
                page = await r.text()
                if r.status == 303:
                    return time.perf_counter() - started
    raise RuntimeError("a report was not filed: " + page[:300])


async def measure(base: str, n: int, in_flight: int, with_photo: bool) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(120):
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.5)
    picture = photo() if with_photo else None
    await asyncio.gather(*(one_report(base, picture, i) for i in range(8)))  # warm-up
    gate = asyncio.Semaphore(in_flight)

    async def paced(i: int) -> float:
        async with gate:
            return await one_report(base, picture, i)

    started = time.perf_counter()
    times = await asyncio.gather(*(paced(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    ms = [t * 1000 for t in times]
    kind = "one 1600x1200 photo" if with_photo else "no photo"
    print(f"{n} web reports ({kind}), {in_flight} in flight, SQLite, one process:")
    print(
        f"  {n / elapsed:6.1f} reports/s   p50 {statistics.median(ms):7.1f} ms"
        f"   p99 {pct(ms, 99):7.1f} ms (GET + 2 POSTs each)"
    )


def run(n: int, in_flight: int, with_photo: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        env = {
            **os.environ,
            "HOTLINE_ENVIRONMENT": "development",
            "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "HOTLINE_MEDIA_DIR": str(Path(tmp) / "media"),
            "HOTLINE_NOMINATIM_URL": "",
            "HOTLINE_REPORT_FORM_PER_HOUR": "1000000",
            "HOTLINE_REPORT_FORM_PER_DAY": "1000000",
            "HOTLINE_REPORT_FORM_MIN_SECONDS": "0",
            "HOTLINE_DEADLINE_WORKER_ENABLED": "false",
            "HOTLINE_STATS_DUTY_ENABLED": "false",
        }
        hotline = str(Path(sys.executable).parent / "hotline")
        subprocess.run([hotline, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([hotline, "import-units"], env=env, check=True, capture_output=True)
        port = free_port()
        server = subprocess.Popen(
            [hotline, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(measure(f"http://127.0.0.1:{port}", n, in_flight, with_photo))
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--photo", action="store_true")
    args = parser.parse_args()
    run(args.n, args.in_flight, args.photo)


if __name__ == "__main__":
    main()
