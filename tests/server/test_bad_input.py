"""Bad input: every case gets its documented status and code, never a 500; the server
keeps serving and nothing is written."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from tests.server.conftest import Person, RunningServer, b64u, fake_jwk, login

Case = tuple[str, str, str, Any, dict[str, str] | None, int, str]


def _body(**fields: Any) -> dict[str, Any]:
    return fields


def _message_cases(conversation_id: str, envelope: dict[str, Any]) -> list[Case]:
    def env(**changes: Any) -> dict[str, Any]:
        return {**envelope, **changes}

    def post(name: str, body: Any, status: int, code: str) -> Case:
        return (name, "POST", "/api/messages", body, None, status, code)

    good = {"conversation_id": conversation_id, "client_msg_id": "bad-1"}
    return [
        post("invalid json", b"{", 400, "invalid_json"),
        post("bad utf-8", b'{"conversation_id": "\xff\xfe"}', 400, "invalid_json"),
        post("json array", [1, 2], 400, "invalid_frame"),
        post("json string", "hello", 400, "invalid_frame"),
        post("json null", None, 400, "invalid_frame"),
        post("missing conversation_id", {"client_msg_id": "x", "envelope": envelope}, 400,
             "missing_field"),
        post("conversation_id is a number", {**good, "conversation_id": 5, "envelope": envelope},
             400, "invalid_field"),
        post("client_msg_id is a bool", {**good, "client_msg_id": True, "envelope": envelope},
             400, "invalid_field"),
        post("unexpected field", {**good, "envelope": envelope, "admin": True}, 400,
             "unexpected_field"),
        post("neither envelope nor text", good, 400, "missing_field"),
        post("envelope version 2", {**good, "envelope": env(v=2)}, 400, "invalid_envelope"),
        post("envelope wrong alg", {**good, "envelope": env(alg="none")}, 400,
             "invalid_envelope"),
        post("envelope short iv", {**good, "envelope": env(iv=b64u(b"123"))}, 400,
             "invalid_envelope"),
        post("envelope no keys", {**good, "envelope": env(keys=[])}, 400, "invalid_envelope"),
        post("envelope sig not base64url", {**good, "envelope": env(sig="!" * 86)}, 400,
             "invalid_envelope"),
        post("envelope keys is a dict", {**good, "envelope": env(keys={})}, 400, "invalid_field"),
        post("envelope over 64 KiB", {**good, "envelope": env(ct="A" * 70_000)}, 413,
             "too_large"),
        post("body over the body limit", b'{"x": "' + b"A" * 400_000 + b'"}', 413, "too_large"),
        post("client_msg_id over 128 chars",
             {**good, "client_msg_id": "x" * 129, "envelope": envelope}, 413, "too_large"),
        post("unknown conversation",
             {**good, "conversation_id": "nope", "envelope": envelope}, 404, "not_found"),
    ]  # fmt: skip


def _other_cases(me: Person) -> list[Case]:
    settings_path = "/api/me/settings"
    return [
        ("events since not a number", "GET", "/api/events?since=abc&timeout=0", None, None, 400,
         "invalid_field"),
        ("events timeout too long", "GET", "/api/events?timeout=99", None, None, 400,
         "invalid_field"),
        ("limit zero", "GET", "/api/conversations?limit=0", None, None, 400, "invalid_field"),
        ("limit over 100", "GET", "/api/conversations?limit=101", None, None, 400,
         "invalid_field"),
        ("garbage cursor", "GET", "/api/conversations?before=%25%25garbage", None, None, 400,
         "invalid_cursor"),
        ("settings value is a string", "PATCH", settings_path, {"read_receipts": "yes"}, None,
         400, "invalid_field"),
        ("settings value is an int", "PATCH", settings_path, {"presence_visible": 1}, None, 400,
         "invalid_field"),
        ("device key with a private part", "PUT", "/api/devices/dx",
         {"public_key": {**fake_jwk(), "d": b64u(b"0" * 32)}, "signing_key": fake_jwk(),
          "name": "x"}, None, 400, "unexpected_field"),
        ("device key of the wrong type", "PUT", "/api/devices/dx",
         {"public_key": {**fake_jwk(), "kty": "RSA"}, "signing_key": fake_jwk(), "name": "x"},
         None, 400, "invalid_field"),
        ("device missing its keys", "PUT", "/api/devices/dx", {"name": "x"}, None, 400,
         "missing_field"),
        ("conversation with nobody", "POST", "/api/conversations", {}, None, 400,
         "missing_field"),
        ("conversation with yourself", "POST", "/api/conversations", {"user_id": me.id}, None,
         400, "invalid_field"),
        ("conversation with an unknown user", "POST", "/api/conversations",
         {"user_id": "ghost"}, None, 404, "not_found"),
        ("lookup with an invalid username", "GET", "/api/users/by-name/a!", None, None, 400,
         "invalid_field"),
        ("devices of an unknown user", "GET", "/api/users/ghost/devices", None, None, 404,
         "not_found"),
        ("unknown route", "GET", "/api/nothing-here", None, None, 404, "not_found"),
        ("wrong method", "DELETE", "/api/me", None, None, 405, "method_not_allowed"),
        ("dev-login with a short username", "POST", "/api/auth/dev-login", {"username": "a"},
         {}, 400, "invalid_field"),
        ("dev-login with a space", "POST", "/api/auth/dev-login", {"username": "a b c"}, {},
         400, "invalid_field"),
        ("dev-login username not a string", "POST", "/api/auth/dev-login", {"username": 42},
         {}, 400, "invalid_field"),
    ]  # fmt: skip


def _token_cases(secret: str, me: Person) -> list[Case]:
    now = int(time.time())
    claims = {
        "sub": me.id,
        "reddit_id": None,
        "username": me.username,
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256")
    other_key = jwt.encode(claims, "another-secret-that-is-long-enough-000000", "HS256")
    header, _payload, signature = me.token.split(".")
    forged_payload = base64.urlsafe_b64encode(
        json.dumps({**claims, "sub": "someone-else"}).encode()
    ).rstrip(b"=")
    tampered = f"{header}.{forged_payload.decode()}.{signature}"
    alg_none = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    missing_jti = jwt.encode({k: v for k, v in claims.items() if k != "jti"}, secret, "HS256")

    def bearer(name: str, token: str, code: str) -> Case:
        return (name, "GET", "/api/me", None, {"Authorization": f"Bearer {token}"}, 401, code)

    return [
        ("no credentials", "GET", "/api/me", None, {}, 401, "unauthenticated"),
        ("basic auth", "GET", "/api/me", None, {"Authorization": "Basic YTpi"}, 401,
         "unauthenticated"),
        bearer("expired token", expired, "token_expired"),
        bearer("token signed with another key", other_key, "invalid_token"),
        bearer("tampered payload", tampered, "invalid_token"),
        bearer("alg none", alg_none, "invalid_token"),
        bearer("garbage token", "abc.def.ghi", "invalid_token"),
        bearer("token without jti", missing_jti, "invalid_token"),
        bearer("huge token", "a" * 10_000, "invalid_token"),
        ("no credentials on a write", "POST", "/api/messages", {"x": 1}, {}, 401,
         "unauthenticated"),
    ]  # fmt: skip


@pytest.fixture
async def pair(people: Any) -> tuple[Person, Person, str]:
    alice, bob = await people(), await people()
    return alice, bob, await alice.conversation_with(bob)


async def test_bad_inputs_get_their_documented_codes_and_write_nothing(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, bob, conversation_id = pair
    secret = server.settings.jwt_secret or (
        (server.settings.data_dir / "jwt-secret").read_text().strip()
    )
    cases = (
        _message_cases(conversation_id, alice.envelope_for(bob))
        + _other_cases(alice)
        + _token_cases(secret, alice)
    )
    assert len(cases) >= 30
    failures = []
    async with server.client() as raw:
        for name, method, path, body, headers, status, code in cases:
            request_headers = (
                {"Authorization": f"Bearer {alice.token}"} if headers is None else headers
            )
            if isinstance(body, bytes):
                content = body
            else:
                content = None if body is None and method == "GET" else json.dumps(body).encode()
            r = await raw.request(
                method,
                path,
                content=content,
                headers={**request_headers, "Content-Type": "application/json"},
            )
            got = r.json().get("error", {}).get("code") if r.content else None
            if (r.status_code, got) != (status, code):
                failures.append(f"{name}: expected {status} {code}, got {r.status_code} {got}")
    assert failures == []

    # Nothing was written: no message, no event, no device, no extra user.
    history = (await bob.http.get(f"/api/conversations/{conversation_id}/messages")).json()
    assert history["messages"] == []
    events = (await bob.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    assert events["events"] == []
    devices = (await alice.http.get(f"/api/users/{alice.id}/devices")).json()
    assert [d["device_id"] for d in devices] == [alice.device_id]
    # And the server still serves.
    async with server.client() as raw:
        assert (await raw.get("/health")).status_code == 200
    fresh = await login(server)
    await fresh.close()


async def test_rate_limited_send_answers_429_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.server.conftest import run_server

    async with run_server({}, tmp_path_factory.mktemp("rl"), send_burst=2.0) as running:
        alice, bob = await login(running), await login(running)
        await alice.register_device()
        await bob.register_device()
        conversation_id = await alice.conversation_with(bob)
        answers = []
        for i in range(3):
            r = await alice.http.post(
                "/api/messages",
                json={
                    "conversation_id": conversation_id,
                    "client_msg_id": f"m{i}",
                    "envelope": alice.envelope_for(bob),
                },
            )
            answers.append(r)
        assert [r.status_code for r in answers] == [201, 201, 429]
        assert answers[2].json()["error"]["code"] == "rate_limited"
        assert int(answers[2].headers["Retry-After"]) >= 1
        await alice.close()
        await bob.close()
