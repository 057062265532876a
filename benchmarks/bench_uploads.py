"""Uploads per second through ``POST /api/media`` (real uvicorn on loopback, httpx).

Each upload is a ~1 MB photo-like JPEG (1920x1440): streamed multipart parsing into a
temporary file, full processing (decode, orient, strip, re-encode, thumbnail) on the
server's media thread pool, two blob writes (local directory, fsynced) and the
metadata row (SQLite), then the signed URLs.

    .venv/bin/python benchmarks/bench_uploads.py [--uploads 60] [--concurrency 1 4]
        [--workers 2] [--out uploads.json]

Prints a markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import uvicorn
from PIL import Image

from omninudge_server.app import create_app
from omninudge_server.config import load_settings


def photo_jpeg(width: int = 1920, height: int = 1440, quality: int = 90) -> bytes:
    """Smooth gradients plus sensor-like noise: compresses like a real photo (~1 MB)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient.transpose(1))
    )
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    out = io.BytesIO()
    Image.blend(base, noise, 0.35).save(out, format="JPEG", quality=quality)
    return out.getvalue()


@contextlib.asynccontextmanager
async def serve(data_dir: Path, workers: int) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = load_settings({}, port=port, data_dir=data_dir)
    settings = attrs.evolve(settings, upload_burst=1e9, media_workers=workers)
    config = uvicorn.Config(
        create_app(settings), lifespan="on", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):  # uvicorn offers no start-up event
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run(uploads: int, concurrency: int, workers: int, image: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        async with (
            serve(Path(directory), workers) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as http,
        ):
            r = await http.post("/api/auth/dev-login", json={"username": "bench_uploads"})
            http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            latencies: list[float] = []
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(uploads):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    queue.get_nowait()
                    start = time.perf_counter()
                    answer = await http.post("/api/media", files={"file": ("p.jpg", image)})
                    answer.raise_for_status()
                    latencies.append((time.perf_counter() - start) * 1000)

            await http.post("/api/media", files={"file": ("warm.jpg", image)})
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "concurrency": concurrency,
        "uploads": uploads,
        "per_second": uploads / elapsed,
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "megabytes_per_second": uploads * len(image) / elapsed / 1e6,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=60)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    image = photo_jpeg()
    results = [
        await run(args.uploads, concurrency, args.workers, image)
        for concurrency in args.concurrency
    ]
    print(f"image: {len(image) / 1e6:.2f} MB JPEG 1920x1440; media workers: {args.workers}")
    print("| concurrent uploads | uploads/s | MB/s | p50 ms | p95 ms |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['concurrency']} | {r['per_second']:.1f} | {r['megabytes_per_second']:.1f} "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    if args.out:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
        args.out.write_text(json.dumps({"results": results, "machine": meta}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
