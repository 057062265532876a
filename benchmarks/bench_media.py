"""Media processing speed (pure CPU, one thread, no I/O).

- thumbnail of a 12-megapixel JPEG (4000x3000, noisy like a photo), with
  ``make_thumbnail`` (libjpeg draft decoding) and inside the full ``process_image``;
- full processing throughput (decode, orient, strip, re-encode, thumbnail) for
  images of about 1 MB: a JPEG photo and a PNG screenshot-like image.

    python benchmarks/bench_media.py [--iterations 20] [--out result.json]

Prints a markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageDraw

from omninudge_adapters.imaging import make_thumbnail, process_image
from omninudge_core.policies.media import DEFAULT_MAX_PIXELS, DEFAULT_THUMBNAIL_PX


def photo_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """Smooth gradients plus sensor-like noise: compresses like a real photo."""
    gradient = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient.transpose(1))
    )
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(base, noise, 0.35)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def screenshot_png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for row in range(0, height, 24):
        draw.text((10, row), f"line {row} " + "lorem ipsum dolor sit amet " * 6, fill="black")
    noise = Image.effect_noise((width // 2, height // 2), 60).convert("RGB")
    image.paste(noise, (width // 2, height // 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def timings_ms(fn: Callable[[], object], iterations: int) -> list[float]:
    fn()  # warm up
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args()
    n = max(1, args.iterations)
    px = DEFAULT_THUMBNAIL_PX

    big = photo_jpeg(4000, 3000)
    jpeg_1mb = photo_jpeg(1920, 1440, quality=92)
    png_1mb = screenshot_png(1600, 1200)

    rows: list[dict[str, object]] = []

    def add(name: str, data: bytes, samples: list[float]) -> None:
        p50 = statistics.median(samples)
        rows.append(
            {
                "case": name,
                "input_bytes": len(data),
                "p50_ms": round(p50, 1),
                "p95_ms": round(sorted(samples)[int(0.95 * (len(samples) - 1))], 1),
                "per_s": round(1000 / p50, 1),
                "mb_per_s": round(len(data) / 1e6 / (p50 / 1000), 1),
            }
        )

    add(
        "thumbnail of a 12 MP JPEG (make_thumbnail, draft)",
        big,
        timings_ms(lambda: make_thumbnail(big, thumbnail_px=px), n),
    )
    add(
        "process a 12 MP JPEG (full decode + re-encode + thumbnail)",
        big,
        timings_ms(
            lambda: process_image(big, max_pixels=DEFAULT_MAX_PIXELS, thumbnail_px=px),
            max(3, n // 4),
        ),
    )
    for name, data in (("process a JPEG photo (1920x1440)", jpeg_1mb),
                       ("process a PNG screenshot (1600x1200)", png_1mb)):  # fmt: skip
        add(
            name,
            data,
            timings_ms(
                lambda data=data: process_image(  # type: ignore[misc]
                    data, max_pixels=DEFAULT_MAX_PIXELS, thumbnail_px=px
                ),
                n,
            ),
        )

    machine = {
        "python": platform.python_version(),
        "pillow": Image.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "iterations": n,
    }
    print("| case | input | p50 ms | p95 ms | per second | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['case']} | {int(str(row['input_bytes'])) / 1e6:.2f} MB | {row['p50_ms']} |"
            f" {row['p95_ms']} | {row['per_s']} | {row['mb_per_s']} |"
        )
    print(
        f"\nPython {machine['python']}, Pillow {machine['pillow']}, {machine['machine']},"
        f" {machine['cpus']} CPUs, load average {machine['load_average']:.2f}, one thread."
    )
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"machine": machine, "results": rows}, out, indent=2)


if __name__ == "__main__":
    main()
