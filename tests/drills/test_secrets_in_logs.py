"""Secrets drill: a server with a Reddit app (the stand-in) logging at DEBUG goes through
a Reddit login, a relayed message, an encrypted message, a listing, bad tokens and a
logout; no token, Reddit credential, OAuth code, envelope or message text appears in
its log. (tests/drills/conftest.py scans every other drill server's log the same way.)"""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import httpx

from omninudge_adapters.reddit.testing import running_standin
from omninudge_server.client import Client
from tests.drills.conftest import leaked_secrets
from tests.drills.harness import (
    SECRETS,
    ServerProcess,
    drill_env,
    envelope,
    login,
    remember_secret,
)
from tests.server.conftest import fake_jwk
from tests.server.reddit_env import (
    CLIENT_SECRET,
    code_and_state,
    make_standin,
    reddit_env,
    start_login,
)

JWT_SECRET = "secrets-drill-jwt-" + "k" * 40


async def test_no_credential_token_or_envelope_reaches_the_debug_log(tmp_path: Path) -> None:
    standin = make_standin()
    standin.add_user("bob_on_reddit")
    standin.add_subreddit("drills")
    remember_secret(CLIENT_SECRET)
    remember_secret(JWT_SECRET)
    relay_text = f"private words for bob {uuid.uuid4().hex}"
    remember_secret(relay_text)
    async with running_standin(standin) as standin_url:
        env = drill_env(**reddit_env(standin_url), OMNINUDGE_JWT_SECRET=JWT_SECRET)
        server = ServerProcess.new(tmp_path, env)
        server.start()
        try:
            await server.wait_ready()
            world = types.SimpleNamespace(standin=standin, standin_url=standin_url)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=15.0) as http:
                location = await start_login(http, world, "alice_reddit")  # type: ignore[arg-type]
                code, state = code_and_state(location)
                remember_secret(code)
                remember_secret(state)
                session = (
                    await http.post("/api/auth/session", json={"code": code, "state": state})
                ).json()
            token = session["access_token"]
            remember_secret(token)
            for issued in (*standin.tokens, *standin.refresh_tokens):
                remember_secret(issued)
            alice = Client(server.base_url, token)
            await alice.me()
            # A relayed (plaintext) message to a Reddit-only person, then a listing.
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
            ) as api:
                created = await api.post(
                    "/api/conversations", json={"reddit_username": "bob_on_reddit"}
                )
                relayed = await api.post(
                    "/api/messages",
                    json={"conversation_id": created.json()["id"], "client_msg_id": "r1",
                          "text": relay_text},
                )  # fmt: skip
                listing = await api.get("/api/reddit/r/drills/hot")
                for bad in (token[:-4] + "AAAA", "x" * 40, token + "."):
                    remember_secret(bad)
                    await api.get("/api/me", headers={"Authorization": f"Bearer {bad}"})
            # An encrypted message between two platform users, over the WebSocket too.
            carol = await login(server.base_url, "carol")
            await alice.register_device(
                "alice-dev-1", public_key=fake_jwk(), signing_key=fake_jwk()
            )
            conversation = await carol.open_conversation(alice.user_id)
            devices = [carol.device_id or "", "alice-dev-1"]
            await carol.send(conversation["id"], envelope(devices[0], devices))
            async with alice.connect(resume_from=0) as stream:
                await stream.recv(5.0)
            for issued in (*standin.tokens, *standin.refresh_tokens):
                remember_secret(issued)  # refreshed ones too
            await alice.logout()
            await alice.aclose()
            await carol.aclose()
        finally:
            server.stop()
    log = server.log(tail=None)
    print(f"\nsecrets drill: {len(log.splitlines())} DEBUG log lines, {len(SECRETS)} secrets")
    assert created.status_code == 201
    assert relayed.status_code == 201
    assert listing.status_code == 200
    assert "DEBUG" in log  # the scan ran over a DEBUG log, not an empty one
    assert leaked_secrets() == []
