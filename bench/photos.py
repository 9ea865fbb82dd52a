"""The photo pipeline on a 12 MP phone JPEG with EXIF GPS, against a plain full decode of
the same file, in one run.

The pipeline reads the EXIF, decodes (JPEG draft decoding at 1/2 scale, since it keeps
at most 2048 px), turns the photo upright, converts to RGB, shrinks, and writes the
clean JPEG and a 320 px thumbnail. The reference only decodes the whole image.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from fractions import Fraction

from PIL import Image, ImageDraw

from backend.services.photos import sanitise

SIZE = (4032, 3024)


def noisy() -> Image.Image:
    """Noise over a gradient: the worst case for draft decoding, since reading the
    entropy-coded data (which draft cannot skip) is most of the work."""
    base = Image.effect_noise(SIZE, 24).convert("RGB")
    overlay = Image.linear_gradient("L").resize(SIZE).convert("RGB")
    return Image.blend(base, overlay, 0.5)


def scene() -> Image.Image:
    """Something more like a photo: sky and ground gradients, shapes, light sensor noise."""
    sky = Image.linear_gradient("L").resize(SIZE)
    img = Image.merge(
        "RGB",
        (
            sky.point(lambda v: 90 + v // 3),
            sky.point(lambda v: 140 + v // 4),
            sky.point(lambda v: 230 - v // 5),
        ),
    )
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 1900, 4032, 3024), fill=(96, 110, 60))
    for i in range(40):
        x, y = (i * 997) % 3800, 1700 + (i * 613) % 1200
        draw.ellipse((x, y, x + 200 + i * 5, y + 120 + i * 3), fill=(70 + i * 3, 60 + i, 50))
    grain = Image.effect_noise(SIZE, 32).convert("RGB")
    return Image.blend(img, grain, 0.2)


def phone_jpeg(make: Callable[[], Image.Image] = noisy) -> bytes:
    """A 12 MP phone photo at quality 90 with EXIF (camera, time, GPS)."""
    img = make()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8769)[36867] = "2026:11:20 07:14:59"
    exif.get_ifd(0x8825).update(
        {
            1: "N",
            2: (Fraction(20), Fraction(4), Fraction(2640, 100)),
            3: "E",
            4: (Fraction(105), Fraction(54), Fraction(4320, 100)),
        }
    )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def interleaved(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median seconds of a and of b, run in turns so that both see the same machine."""
    a(), b()
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(runs):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def full_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.load()


def measure(label: str, data: bytes, runs: int) -> None:
    clean = sanitise(data, 50 * 1024 * 1024)
    assert clean.gps is not None and max(clean.width, clean.height) <= 2048
    decode, pipeline = interleaved(
        lambda: full_decode(data), lambda: sanitise(data, 50 * 1024 * 1024), runs
    )
    print(f"{label}: 12 MP JPEG, {len(data) / 1e6:.1f} MB -> {clean.width}x{clean.height},")
    print(f"  {len(clean.jpeg) / 1e3:.0f} kB + {len(clean.thumbnail) / 1e3:.0f} kB thumbnail")
    print(f"  plain full decode : {decode * 1000:7.1f} ms")
    ratio = pipeline / decode
    print(f"  whole pipeline    : {pipeline * 1000:7.1f} ms   ratio {ratio:.2f} (goal <= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    measure("noise (worst case)", phone_jpeg(noisy), args.runs)
    measure("scene", phone_jpeg(scene), args.runs)


if __name__ == "__main__":
    main()
