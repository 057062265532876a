"""Accounts for a bench run, made through the public API like any client would:
dev login, a device with real P-256 keys, the conversation, and one sealed envelope
per lane (``omninudge_adapters.crypto.seal``) that the generator then reuses."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import attrs
import httpx
import orjson

from omninudge_adapters.crypto import DeviceKeys, seal

__all__ = ["Account", "Lane", "make_accounts", "make_lanes"]

T = TypeVar("T")

SETUP_CONCURRENCY = 16


@attrs.frozen
class Account:
    """One WebSocket connection's identity: a user, its token and a device."""

    user_id: str
    token: str
    device_id: str


@attrs.frozen
class Lane:
    """One conversation's traffic: the sender's connection and every connection that
    must receive each message (one for a pair, one per device for fan-out)."""

    index: int
    conversation_id: str
    sender: Account
    recipients: tuple[Account, ...]
    envelope_json: str  # the sealed envelope, serialized once


class _Api:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _json(self, method: str, path: str, token: str | None, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json() if response.content else None

    async def login(self, username: str) -> tuple[str, str]:
        body = await self._json("POST", "/api/auth/dev-login", None, {"username": username})
        return str(body["user"]["id"]), str(body["access_token"])

    async def device(self, token: str, device_id: str, keys: DeviceKeys) -> None:
        body = {"public_key": keys.public_key, "signing_key": keys.signing_key, "name": "bench"}
        await self._json("PUT", f"/api/devices/{device_id}", token, body)

    async def conversation(self, token: str, other_user_id: str) -> str:
        body = await self._json("POST", "/api/conversations", token, {"user_id": other_user_id})
        return str(body["id"])


async def _bounded(jobs: Sequence[Awaitable[T]], limit: int = SETUP_CONCURRENCY) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with semaphore:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def _run_id() -> str:
    return secrets.token_hex(3)


async def _person(api: _Api, username: str, devices: int) -> list[tuple[Account, DeviceKeys]]:
    user_id, token = await api.login(username)
    made = []
    for index in range(devices):
        keys = DeviceKeys.generate()
        device_id = f"{username}.d{index}"
        await api.device(token, device_id, keys)
        made.append((Account(user_id, token, device_id), keys))
    return made


async def make_lanes(
    base_url: str, *, lanes: int, devices_per_recipient: int = 1, body_bytes: int = 200
) -> list[Lane]:
    """``lanes`` conversations (a fresh sender and recipient each) whose recipient has
    ``devices_per_recipient`` devices, and one real envelope per lane whose plaintext
    body is ``body_bytes`` long."""
    run = _run_id()
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        api = _Api(http)
        senders = await _bounded([_person(api, f"b{run}s{i}", 1) for i in range(lanes)])
        recipients = await _bounded(
            [_person(api, f"b{run}r{i}", devices_per_recipient) for i in range(lanes)]
        )
        conversations = await _bounded(
            [
                api.conversation(sender[0][0].token, recipient[0][0].user_id)
                for sender, recipient in zip(senders, recipients, strict=True)
            ]
        )
    made = []
    for index, (sender, recipient, conversation_id) in enumerate(
        zip(senders, recipients, conversations, strict=True)
    ):
        (sender_account, sender_keys) = sender[0]
        envelope = seal(
            {"type": "text", "body": "x" * body_bytes},
            conversation_id=conversation_id,
            client_msg_id="bench-template",
            sender_device_id=sender_account.device_id,
            sender_signing_key=sender_keys.signing_private,
            recipients={
                account.device_id: keys.public_key for account, keys in [*sender, *recipient]
            },
        )
        made.append(
            Lane(
                index=index,
                conversation_id=conversation_id,
                sender=sender_account,
                recipients=tuple(account for account, _ in recipient),
                envelope_json=orjson.dumps(envelope).decode(),
            )
        )
    return made


async def make_accounts(base_url: str, *, users: int) -> list[Account]:
    """``users`` logged-in users with one device each (for idle connections)."""
    run = _run_id()
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        api = _Api(http)
        people = await _bounded([_person(api, f"b{run}i{i}", 1) for i in range(users)])
    return [person[0][0] for person in people]
