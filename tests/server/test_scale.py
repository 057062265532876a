"""Several server processes as one: two ``omninudge serve`` subprocesses sharing a fresh
PostgreSQL database and Redis (its own key prefix), alice on instance 1, bob on
instance 2 (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from omninudge_server.client import ApiError, Client, Stream
from tests.server.conftest import fake_envelope, fake_jwk, unique_name
from tests.server.media_helpers import tiny_jpeg
from tests.server.multiproc import Cluster, Instance
from tests.services_redis import RedisServer

Frame = dict[str, Any]


async def frame_where(stream: Stream, want: Callable[[Frame], bool], wait_s: float = 10.0) -> Frame:
    """The next frame ``want`` accepts, skipping others. Raises TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError("no matching frame")
        frame = await stream.recv(remaining)
        if want(frame):
            return frame


def of_type(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


def message_with(message_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "message" and f["message"]["id"] == message_id


async def person(instance: Instance, name: str) -> Client:
    """A user logged in on ``instance`` with one registered device."""
    client = await Client.dev_login(instance.base_url, unique_name(name))
    await client.register_device(
        f"dev_{uuid.uuid4().hex[:12]}", public_key=fake_jwk(), signing_key=fake_jwk()
    )
    return client


def on(instance: Instance, client: Client) -> Client:
    """The same user and device, talking to another instance."""
    moved = Client(instance.base_url, client.token, device_id=client.device_id)
    moved.user = client.user
    return moved


async def me_status(client: Client) -> int:
    """The status of ``GET /api/me`` for this client (then closes it)."""
    try:
        await client.me()
    except ApiError as exc:
        return exc.status
    finally:
        await client.aclose()
    return 200


def envelope(sender: Client, recipient: Client) -> dict[str, Any]:
    assert sender.device_id is not None
    assert recipient.device_id is not None
    return fake_envelope(sender.device_id, [sender.device_id, recipient.device_id])


async def wait_for_health(instance: Instance, status: str, redis: str, wait_s: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    body: dict[str, Any] = {}
    while loop.time() < deadline:
        body = await instance.health()
        if (body["status"], body["redis"]) == (status, redis):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{instance.name} health stayed {body}")


@contextlib.asynccontextmanager
async def cluster_of_two(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Cluster, Instance, Instance]]:
    cluster = Cluster(
        database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix, root=tmp_path
    )
    try:
        one, two = await cluster.start(2)
        yield cluster, one, two
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()


@pytest.fixture
async def two_instances(
    tmp_path: Path,
    postgres_database_factory: Callable[[], str],
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[tuple[Instance, Instance]]:
    async with cluster_of_two(tmp_path, postgres_database_factory(), redis_url, redis_prefix) as (
        _,
        one,
        two,
    ):
        yield one, two


async def test_both_instances_report_redis_and_postgres_healthy(
    two_instances: tuple[Instance, Instance],
) -> None:
    for instance in two_instances:
        health = await instance.health()
        assert (health["status"], health["database_kind"], health["redis"]) == (
            "healthy",
            "postgres",
            "ok",
        )


async def test_alice_and_bob_on_two_instances_talk_live(
    two_instances: tuple[Instance, Instance],
) -> None:
    """Messages, receipts, typing and presence cross instances through Redis."""
    one, two = two_instances
    alice, bob = await person(one, "alice"), await person(two, "bob")
    conversation_id = (await alice.open_conversation(bob.user_id))["id"]
    async with alice.connect() as a_stream:
        async with bob.connect() as b_stream:
            # Alice first hears bob is offline (her own connect), then that he came online.
            await frame_where(a_stream, of_type("presence", user_id=bob.user_id, online=True))

            await a_stream.send(conversation_id, envelope(alice, bob))
            sent = await frame_where(a_stream, of_type("sent"))
            message_id = sent["message"]["id"]
            incoming = await frame_where(b_stream, message_with(message_id))
            assert incoming["seq"] >= 1
            await b_stream.ack()

            await frame_where(a_stream, message_with(message_id))  # the sender's own copy
            await a_stream.ack()
            delivered = await frame_where(a_stream, of_type("receipt", message_id=message_id))
            assert (delivered["status"], delivered["user_id"]) == ("delivered", bob.user_id)
            await a_stream.ack()

            await b_stream.read(conversation_id, message_id)
            read = await frame_where(a_stream, of_type("receipt", message_id=message_id))
            assert read["status"] == "read"
            await a_stream.ack()

            await b_stream.typing(conversation_id)
            typing = await frame_where(a_stream, of_type("typing"))
            assert (typing["conversation_id"], typing["user_id"]) == (conversation_id, bob.user_id)
            await a_stream.typing(conversation_id)
            typing = await frame_where(b_stream, of_type("typing"))
            assert typing["user_id"] == alice.user_id

            await b_stream.send(conversation_id, envelope(bob, alice))
            reply_id = (await frame_where(b_stream, of_type("sent")))["message"]["id"]
            reply = await frame_where(a_stream, message_with(reply_id))
            assert reply["message"]["sender_id"] == bob.user_id
        offline = await frame_where(a_stream, of_type("presence", user_id=bob.user_id))
        assert offline["online"] is False
    for client in (alice, bob):
        await client.aclose()


async def test_a_slideshow_started_on_one_instance_drives_the_other(
    two_instances: tuple[Instance, Instance],
) -> None:
    """Slideshow state travels through the shared stream and Redis fan-out both ways."""
    one, two = two_instances
    alice, bob = await person(one, "alice"), await person(two, "bob")
    conversation_id = (await alice.open_conversation(bob.user_id))["id"]
    media_ids = [
        (await alice.upload_media(tiny_jpeg(colour)))["id"] for colour in ("red", "green", "blue")
    ]
    is_slideshow = of_type("slideshow", conversation_id=conversation_id)
    async with alice.connect() as a_stream, bob.connect() as b_stream:
        await frame_where(a_stream, of_type("presence", user_id=bob.user_id, online=True))
        await a_stream.slideshow_start(conversation_id, media_ids)
        started = (await frame_where(b_stream, is_slideshow))["state"]
        assert (started["version"], started["index"]) == (1, 0)
        assert list(started["media_ids"]) == media_ids

        await b_stream.slideshow_nav(conversation_id, "next", started["version"])
        seen_by_alice = await frame_where(
            a_stream, lambda f: is_slideshow(f) and f["state"]["version"] == 2
        )
        assert seen_by_alice["state"]["index"] == 1
        assert seen_by_alice["state"]["controller"] == bob.user_id

        await a_stream.slideshow_nav(conversation_id, "goto", 2, index=2)
        seen_by_bob = await frame_where(
            b_stream, lambda f: is_slideshow(f) and f["state"]["version"] == 3
        )
        assert seen_by_bob["state"]["index"] == 2
    for client in (alice, bob):
        await client.aclose()


async def _send_and_confirm(stream: Stream, conversation_id: str, env: dict[str, Any]) -> str:
    client_msg_id = await stream.send(conversation_id, env)
    sent = await frame_where(stream, of_type("sent", client_msg_id=client_msg_id))
    message_id: str = sent["message"]["id"]
    return message_id


async def _drain_messages(stream: Stream, into: list[str], wait_s: float = 1.0) -> None:
    """Collect message ids until the stream is quiet for ``wait_s`` or closes."""
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        while True:
            frame = await stream.recv(wait_s)
            if frame.get("type") == "message":
                into.append(frame["message"]["id"])


async def test_a_killed_instance_loses_nothing_its_clients_resume_on_the_other(
    two_instances: tuple[Instance, Instance],
) -> None:
    one, two = two_instances
    alice, bob = await person(one, "alice"), await person(two, "bob")
    conversation_id = (await alice.open_conversation(bob.user_id))["id"]
    sent_ids: list[str] = []
    received: list[str] = []  # by bob, across both sessions, duplicates kept
    async with alice.connect() as a_stream:
        async with bob.connect() as b_stream:
            for _ in range(10):
                sent_ids.append(
                    await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
                )
            while len(received) < 10:
                frame = await frame_where(b_stream, of_type("message"))
                received.append(frame["message"]["id"])
            await b_stream.ack()
            acked_before_crash = b_stream.resume_from
            for _ in range(5):
                sent_ids.append(
                    await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
                )
            two.kill()  # mid-conversation: bob got some of these, acked none of them
            await _drain_messages(b_stream, received, wait_s=2.0)
            for _ in range(5):
                sent_ids.append(
                    await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
                )
        assert b_stream.resume_from == acked_before_crash

        bob_on_one = on(one, bob)
        async with bob_on_one.connect(resume_from=acked_before_crash) as resumed:
            assert resumed.hello is not None
            assert resumed.hello["resume_from"] == acked_before_crash
            await _drain_messages(resumed, received, wait_s=2.0)
            await resumed.ack()
        await bob_on_one.aclose()
    # Everything acknowledged to alice reached bob, in order; duplicates only for what
    # was pushed but not acked before the crash (at-least-once, deduplicated by id).
    deduplicated = list(dict.fromkeys(received))
    assert deduplicated == sent_ids
    repeated = {m for m in received if received.count(m) > 1}
    assert repeated <= set(sent_ids[10:15])
    history = await alice.history(conversation_id, limit=100)
    assert sorted(m["id"] for m in history["messages"]) == sorted(sent_ids)
    for client in (alice, bob):
        await client.aclose()


@pytest.fixture
def private_redis(redis_server_factory: Callable[[], RedisServer]) -> RedisServer:
    return redis_server_factory()


async def test_redis_outage_degrades_and_recovers_without_losing_a_message(
    tmp_path: Path,
    postgres_database_factory: Callable[[], str],
    private_redis: RedisServer,
) -> None:
    async with cluster_of_two(
        tmp_path, postgres_database_factory(), private_redis.url, "omninudge-outage:"
    ) as (cluster, one, two):
        alice, bob = await person(one, "alice"), await person(two, "bob")
        carol = await person(one, "carol")
        conversation_id = (await alice.open_conversation(bob.user_id))["id"]
        await carol.open_conversation(alice.user_id)
        async with alice.connect() as a_stream, bob.connect() as b_stream:
            first = await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
            await frame_where(b_stream, message_with(first))

            private_redis.stop()
            await wait_for_health(one, "degraded", "down")
            await wait_for_health(two, "degraded", "down")
            during = [
                await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
                for _ in range(5)
            ]
            # REST sends are accepted and committed too (rate limits fall back per process).
            rest = await alice.send(conversation_id, envelope(alice, bob))
            during.append(rest["id"])
            # Presence is unknown: carol connecting now shows as online null to alice.
            async with carol.connect():
                unknown = await frame_where(a_stream, of_type("presence", user_id=carol.user_id))
                assert unknown["online"] is None
            # Revocations fail open, except where the logout happened.
            await carol.logout()
            assert await me_status(on(one, carol)) == 401
            assert await me_status(on(two, carol)) == 200

            private_redis.start()
            await wait_for_health(one, "healthy", "ok")
            await wait_for_health(two, "healthy", "ok")
            # Bob's connection on instance 2 catches up without reconnecting.
            got: list[str] = []
            while len(got) < len(during):
                frame = await frame_where(b_stream, of_type("message"), wait_s=15.0)
                got.append(frame["message"]["id"])
            assert got == during
            await b_stream.ack()
            # Live again across instances.
            after = await _send_and_confirm(a_stream, conversation_id, envelope(alice, bob))
            await frame_where(b_stream, message_with(after), wait_s=10.0)
            # The logout made during the outage reached Redis once it answered.
            assert await me_status(on(one, carol)) == 401
            assert await me_status(on(two, carol)) == 401
        for client in (alice, bob, carol):
            await client.aclose()
        # One line when the outage starts, not one per message.
        log = one.log(tail=None)
        assert log.count("fan-out: redis unavailable") == 1, cluster.logs()
        assert "fan-out publish failed" not in log
