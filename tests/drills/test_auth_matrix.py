"""Authorization matrix against a real ``omninudge serve``: every secured endpoint of
/api/openapi.json with every kind of bad credential, cookie writes from another
Origin, and every endpoint and frame that names someone else's resources, tried by a
stranger, a blocked user and a logged-out user. tests/server/test_authorization.py
and test_bad_input.py hold the single-endpoint versions."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import jwt
import pytest
import websockets
from PIL import Image
from websockets.exceptions import ConnectionClosed

from omninudge_server.client import Client, Stream
from tests.drills.harness import ServerProcess, drill_env, envelope, login, remember_secret
from tests.server.conftest import fake_jwk

JWT_SECRET = "matrix-secret-" + "m" * 40
# Placeholders for path parameters nobody owns (401 comes before any lookup).
_PLACEHOLDERS = {"username": "someone", "sort": "hot", "subreddit": "python"}


@attrs.frozen
class World:
    server: ServerProcess
    alice: Client  # the victim: owns the conversation, the device and the media
    bob: Client  # alice's contact, blocked by alice
    carol: Client  # a stranger
    conversation_id: str
    media_id: str
    operations: list[tuple[str, str, dict[str, Any]]]  # (method, path, operation)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    server = ServerProcess.new(
        tmp_path_factory.mktemp("matrix"), drill_env(OMNINUDGE_JWT_SECRET=JWT_SECRET)
    )
    server.start()
    await server.wait_ready()
    alice, bob = await login(server.base_url, "alice"), await login(server.base_url, "bob")
    carol = await login(server.base_url, "carol")
    conversation = await alice.open_conversation(bob.user_id)
    assert alice.device_id
    assert bob.device_id
    await alice.send(
        conversation["id"], envelope(alice.device_id, [alice.device_id, bob.device_id])
    )
    media = await alice.upload_media(png(), "red.png")
    await alice.block(bob.user_id)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        document = (await http.get("/api/openapi.json")).json()
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    try:
        yield World(server, alice, bob, carol, conversation["id"], media["id"], operations)
    finally:
        for client in (alice, bob, carol):
            await client.aclose()
        server.stop()


def concrete(path: str, world: World) -> str:
    """A secured path with the victim's ids in it."""
    values = {
        "conversation_id": world.conversation_id,
        "user_id": world.alice.user_id,
        "device_id": world.alice.device_id or "",
        "media_id": world.media_id,
        **_PLACEHOLDERS,
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {path}: extend the matrix"
    return path


def bad_tokens(world: World, revoked: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": world.alice.user_id, "reddit_id": None, "username": "alice",
              "iat": now, "exp": now + 600, "jti": "matrix-jti"}  # fmt: skip
    header, _, signature = world.alice.token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tokens = {
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, JWT_SECRET),
        "tampered": f"{header}.{payload}.{signature}",
        "alg none": jwt.encode(claims, key=None, algorithm="none"),  # type: ignore[arg-type]
        "wrong key": jwt.encode(claims, "not-the-server-key-" + "x" * 30),
        "revoked (logged out)": revoked,
    }
    for token in tokens.values():
        remember_secret(token)
    return tokens


async def test_every_secured_endpoint_refuses_every_bad_credential(world: World) -> None:
    dave = await login(world.server.base_url, "dave")
    await dave.logout()
    tokens = bad_tokens(world, dave.token)
    await dave.aclose()
    secured = [(m, p) for m, p, op in world.operations if op.get("security")]
    assert len(secured) >= 20
    wrong: dict[str, tuple[int, str]] = {}
    async with httpx.AsyncClient(base_url=world.server.base_url, timeout=10.0) as http:
        for method, path in secured:
            url = concrete(path, world)
            for name, token in {"no credentials": None, **tokens}.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = await http.request(method, url, headers=headers, json={})
                code = r.json()["error"]["code"] if r.status_code == 401 else r.text[:80]
                expected = {
                    "expired": "token_expired",
                    "no credentials": "unauthenticated",
                    "revoked (logged out)": "token_revoked",
                }
                if (r.status_code, code) != (401, expected.get(name, "invalid_token")):
                    wrong[f"{method} {path} with {name}"] = (r.status_code, code)
    print(f"\nauth matrix: {len(secured)} secured endpoints x 6 bad credentials")
    assert wrong == {}


async def test_cookie_writes_without_our_origin_are_refused_everywhere(world: World) -> None:
    writes = [(m, p) for m, p, op in world.operations if op.get("security") and m != "GET"]
    wrong: dict[str, int] = {}
    cookies = {"omninudge_session": world.carol.token}
    async with httpx.AsyncClient(
        base_url=world.server.base_url, timeout=10.0, cookies=cookies
    ) as http:
        for method, path in writes:
            for origin in (None, "https://evil.example", "null"):
                headers = {"Origin": origin} if origin else {}
                r = await http.request(method, concrete(path, world), headers=headers, json={})
                if r.status_code != 403 or r.json()["error"]["code"] != "origin_mismatch":
                    wrong[f"{method} {path} Origin={origin}"] = r.status_code
        # The same cookie with our Origin is accepted (the check is not simply "refuse").
        ok = await http.get("/api/me")
    assert wrong == {}
    assert ok.status_code == 200


def resource_requests(world: World) -> dict[tuple[str, str], tuple[str, Any]]:
    """(method, openapi path) -> (concrete path, JSON body) for every secured operation
    that names someone else's conversation, device, media or user."""
    conversation, device = world.conversation_id, world.alice.device_id or ""
    return {
        ("GET", "/api/conversations/{conversation_id}/messages"):
            (f"/api/conversations/{conversation}/messages", None),
        ("POST", "/api/conversations/{conversation_id}/read"):
            (f"/api/conversations/{conversation}/read", {"up_to": "x"}),
        ("POST", "/api/messages"): ("/api/messages", None),  # body per caller, below
        ("PUT", "/api/devices/{device_id}"): (f"/api/devices/{device}", {
            "public_key": fake_jwk(), "signing_key": fake_jwk(), "name": "mine"}),
        ("DELETE", "/api/devices/{device_id}"): (f"/api/devices/{device}", None),
        ("GET", "/api/media/{media_id}"): (f"/api/media/{world.media_id}", None),
        ("PUT", "/api/media/{media_id}/shares/{conversation_id}"):
            (f"/api/media/{world.media_id}/shares/{conversation}", None),
    }  # fmt: skip


# Public by design: a user's devices (to encrypt for them), their name, blocking them.
PUBLIC_ABOUT_OTHERS = {
    ("GET", "/api/users/{user_id}/devices"),
    ("GET", "/api/users/{user_id}"),
    ("PUT", "/api/blocks/{user_id}"),
    ("DELETE", "/api/blocks/{user_id}"),
}


async def test_a_stranger_and_a_blocked_user_touch_nothing_of_others_over_rest(
    world: World,
) -> None:
    table = resource_requests(world)
    naming_others = {
        (m, p) for m, p, op in world.operations
        if op.get("security") and ("_id}" in p or p == "/api/messages")
    }  # fmt: skip
    assert naming_others == set(table) | PUBLIC_ABOUT_OTHERS, "extend the matrix"
    results: dict[str, dict[str, int]] = {}
    for who in (world.carol, world.bob):
        device = who.device_id or ""
        statuses = {}
        for (method, path), (url, body) in table.items():
            if path == "/api/messages":
                sealed = envelope(device, [device, world.alice.device_id or ""])
                body = {"conversation_id": world.conversation_id, "client_msg_id": "intruder",
                        "envelope": sealed}  # fmt: skip
            async with httpx.AsyncClient(base_url=world.server.base_url) as http:
                r = await http.request(
                    method, url, json=body, headers={"Authorization": f"Bearer {who.token}"}
                )
            statuses[f"{method} {path}"] = r.status_code
        results["stranger" if who is world.carol else "blocked"] = statuses
    # Nothing changed for alice: still one message, her device and her media.
    history = await world.alice.history(world.conversation_id)
    devices = await world.alice.devices(world.alice.user_id)
    media = await world.alice.media(world.media_id)
    stranger, blocked = results["stranger"], results["blocked"]
    assert stranger == {
        "GET /api/conversations/{conversation_id}/messages": 404,
        "POST /api/conversations/{conversation_id}/read": 404,
        "POST /api/messages": 404,
        "PUT /api/devices/{device_id}": 403,
        "DELETE /api/devices/{device_id}": 404,
        "GET /api/media/{media_id}": 404,
        "PUT /api/media/{media_id}/shares/{conversation_id}": 404,
    }
    # Bob is a participant: history and read stay his (API.md: "existing history stays"),
    # but he cannot message alice, and her device and media stay hers.
    assert blocked["POST /api/messages"] == 403
    assert blocked["PUT /api/devices/{device_id}"] == 403
    assert blocked["DELETE /api/devices/{device_id}"] == 404
    assert blocked["GET /api/media/{media_id}"] == 404
    assert blocked["PUT /api/media/{media_id}/shares/{conversation_id}"] == 404
    assert len(history["messages"]) == 1
    assert [d["device_id"] for d in devices] == [world.alice.device_id]
    assert media["id"] == world.media_id


async def errors_for(stream: Stream, count: int) -> list[str]:
    codes = []
    while len(codes) < count:
        frame = await stream.recv(5.0)
        if frame["type"] == "error":
            codes.append(frame["code"])
    return codes


async def quiet(stream: Stream, wait_s: float = 1.0) -> list[str]:
    """The types of the frames that arrive within ``wait_s``."""
    seen = []
    try:
        while True:
            seen.append((await stream.recv(wait_s))["type"])
    except TimeoutError:
        return seen


def frames_about(world: World, device: str) -> list[dict[str, Any]]:
    conversation = world.conversation_id
    return [
        {"type": "send", "conversation_id": conversation, "client_msg_id": f"ws-{device}",
         "envelope": envelope(device, [device, world.alice.device_id or ""])},
        {"type": "typing", "conversation_id": conversation},
        {"type": "read", "conversation_id": conversation, "up_to": "x"},
        {"type": "slideshow_start", "conversation_id": conversation,
         "media_ids": [world.media_id]},
        {"type": "slideshow_nav", "conversation_id": conversation, "action": "next",
         "base_version": 1},
        {"type": "slideshow_stop", "conversation_id": conversation},
    ]  # fmt: skip


async def test_frames_from_a_stranger_and_a_blocked_user_reach_nobody(world: World) -> None:
    async with world.alice.connect() as alice_stream:
        await quiet(alice_stream, 0.3)
        codes = {}
        for name, who in (("stranger", world.carol), ("blocked", world.bob)):
            async with who.connect() as stream:
                for frame in frames_about(world, who.device_id or ""):
                    await stream._send(frame)
                codes[name] = await errors_for(stream, 5)
                # Neither sees the other's presence across the block / without contact.
                seen_by_intruder = await quiet(stream, 0.5)
        alice_saw = await quiet(alice_stream, 1.0)
    print(f"\nframe matrix: {codes}")
    assert codes["stranger"] == ["not_found"] * 5
    # Bob takes part, so he is refused rather than hidden: send, slideshow start and nav
    # are blocked; typing is dropped silently; "read up to x" names no message of the
    # conversation; stopping a show that does not run is illegal (a block never forbids
    # stopping, policies.blocking).
    assert codes["blocked"] == ["blocked", "not_found", "blocked", "blocked",
                                "illegal_transition"]  # fmt: skip
    assert alice_saw == []
    assert "presence" not in seen_by_intruder


async def test_bad_and_revoked_tokens_cannot_open_a_websocket(world: World) -> None:
    erin = await login(world.server.base_url, "erin")
    await erin.logout()
    codes = {}
    for name, token in bad_tokens(world, erin.token).items():
        async with websockets.connect(world.server.ws_url) as connection:
            await connection.send(json.dumps({"type": "auth", "token": token}))
            try:
                while True:
                    await asyncio.wait_for(connection.recv(), 5)
            except ConnectionClosed:
                codes[name] = connection.close_code
    await erin.aclose()
    assert set(codes.values()) == {4401}
    assert len(codes) == 5
