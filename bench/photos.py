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

from PIL import Image

from backend.services.photos import sanitise


def phone_jpeg() -> bytes:
    """4032 × 3024 with noise and a gradient (about 5 MB, like a phone photo), EXIF GPS."""
    base = Image.effect_noise((4032, 3024), 24).convert("RGB")
    overlay = Image.linear_gradient("L").resize((4032, 3024)).convert("RGB")
    img = Image.blend(base, overlay, 0.5)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    data = phone_jpeg()
    clean = sanitise(data, 50 * 1024 * 1024)
    assert clean.gps is not None and max(clean.width, clean.height) <= 2048
    decode, pipeline = interleaved(
        lambda: full_decode(data), lambda: sanitise(data, 50 * 1024 * 1024), args.runs
    )
    print(f"input: 12 MP JPEG, {len(data) / 1e6:.1f} MB; output {clean.width}x{clean.height},")
    print(f"  {len(clean.jpeg) / 1e3:.0f} kB + {len(clean.thumbnail) / 1e3:.0f} kB thumbnail")
    print(f"plain full decode : {decode * 1000:7.1f} ms")
    ratio = pipeline / decode
    print(f"whole pipeline    : {pipeline * 1000:7.1f} ms   ratio {ratio:.2f} (goal <= 1.0)")


if __name__ == "__main__":
    main()
