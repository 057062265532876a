"""Core throughput: delivery-machine transitions per second and wire frame
decode+validate per second (pure CPU, one core, no I/O).

    python benchmarks/bench_core.py [--seconds 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from omninudge_core import codec, delivery


def b64(n: int, first: bytes = b"") -> str:
    raw = first + os.urandom(n - len(first))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def send_frame(devices: int, body_bytes: int) -> bytes:
    envelope = {
        "v": 1,
        "alg": "ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        "sender_device": "dev-0",
        "epk": b64(65, b"\x04"),
        "iv": b64(12),
        "ct": b64(body_bytes + 16),
        "keys": [{"device": f"dev-{i}", "iv": b64(12), "wk": b64(48)} for i in range(devices)],
        "sig": b64(64),
    }
    frame = {
        "type": "send",
        "conversation_id": "c-0123456789",
        "client_msg_id": "m-0123456789",
        "envelope": envelope,
    }
    return orjson.dumps(frame)


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Run ``fn`` (which returns how many operations it did) for ``seconds``; ops/s."""
    fn()  # warm up
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += fn()
    return done / elapsed


def bench_delivery(seconds: float) -> float:
    """Full life of one message to a 2-device recipient: accept, push, ack, read."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    devices = ("d1", "d2")
    events = [
        delivery.PushedToDevice("d1"),
        delivery.PushedToDevice("d2"),
        delivery.DeviceAcked("d1"),
        delivery.DeviceAcked("d2"),
        delivery.ReadByRecipient(None),
    ]

    def one_message() -> int:
        decision = delivery.accept(
            message_id="m1",
            conversation_id="c1",
            sender_id="alice",
            recipient_id="bob",
            device_ids=devices,
            reddit_only=False,
            now=now,
        )
        state = decision.state
        for event in events:
            state = delivery.handle(state, event, now).state
        return 1 + len(events)  # transitions, counting accept

    return rate(one_message, seconds)


def bench_decode(seconds: float, raw: bytes, *, preparsed: bool) -> float:
    c = codec.default_codec()
    if preparsed:

        def batch() -> int:
            for _ in range(100):
                c.structure_client_frame(orjson.loads(raw))
            return 100
    else:

        def batch() -> int:
            for _ in range(100):
                c.decode_client_frame(raw)
            return 100

    return rate(batch, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    send_2 = send_frame(devices=2, body_bytes=200)
    send_8 = send_frame(devices=8, body_bytes=2000)
    ack = orjson.dumps({"type": "ack", "seq": 123456})
    results = {
        "delivery transitions/s (accept, 2 pushes, 2 acks, read)": bench_delivery(args.seconds),
        "decode+validate send frame/s (2 devices, 200 B body)": bench_decode(
            args.seconds, send_2, preparsed=False
        ),
        "decode+validate send frame/s (8 devices, 2 KB body)": bench_decode(
            args.seconds, send_8, preparsed=False
        ),
        "orjson.loads + structure send frame/s (2 devices)": bench_decode(
            args.seconds, send_2, preparsed=True
        ),
        "decode+validate ack frame/s": bench_decode(args.seconds, ack, preparsed=False),
    }
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"| case | per second |  ({machine}, Python {platform.python_version()})")
    print("|---|---:|")
    for case, value in results.items():
        print(f"| {case} | {value:,.0f} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
