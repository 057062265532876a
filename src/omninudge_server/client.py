"""A small Python SDK for the OmniNudge API (httpx + websockets).

    async with await Client.dev_login("http://127.0.0.1:8080", "alice") as alice:
        await alice.register_device("laptop-1", public_key=jwk, signing_key=jwk2)
        conversation = await alice.open_conversation(bob_id)
        await alice.send(conversation["id"], envelope)
        async with alice.connect() as stream:
            frame = await stream.recv()   # hello, message, receipt, typing, presence...
            await stream.ack()            # everything received so far

Envelopes are opaque here: build them with ``omninudge_adapters.crypto`` (or any
implementation of API.md's v1 envelope). ``Stream`` deduplicates the durable events
(at-least-once on the wire) by ``seq``, and ``Stream.resume_from`` is what to pass to
the next ``connect`` after a drop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

__all__ = ["ApiError", "Client", "Stream"]


class ApiError(Exception):
    """An API error answer: ``status``, ``code`` and the whole ``error`` object."""

    def __init__(self, status: int, error: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.code = str(error.get("code"))
        self.error = dict(error)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text[:200]}
        raise ApiError(response.status_code, error)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


class Stream:
    """One WebSocket session. ``recv`` returns frames as dicts; durable events
    (those with ``seq``) already seen are skipped, so each arrives once."""

    def __init__(self, connection: ClientConnection, resume_from: int) -> None:
        self._connection = connection
        self.hello: dict[str, Any] | None = None
        self.last_seq = resume_from  # highest seq received
        self.acked_seq = resume_from  # highest seq acknowledged to the server
        self.duplicates = 0  # durable events received again (skipped by recv)

    @property
    def close_code(self) -> int | None:
        """The close code once the server closed the connection (4401: auth, 1008:
        abuse, 1009: frame too big)."""
        return self._connection.close_code

    @property
    def resume_from(self) -> int:
        """What to pass to ``connect`` to continue after this session."""
        return self.acked_seq

    async def _send(self, frame: Mapping[str, Any]) -> None:
        await self._connection.send(json.dumps(frame, separators=(",", ":")))

    async def recv(self, wait_s: float | None = None) -> dict[str, Any]:
        """The next frame, waiting at most ``wait_s`` seconds (None: forever).
        Raises TimeoutError, or websockets' ConnectionClosed."""
        while True:
            raw = await asyncio.wait_for(self._connection.recv(), wait_s)
            frame: dict[str, Any] = json.loads(raw)
            seq = frame.get("seq")
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    self.duplicates += 1
                    continue  # a duplicate after a resume
                self.last_seq = seq
            if frame.get("type") == "hello":
                self.hello = frame
            return frame

    async def ack(self, seq: int | None = None) -> None:
        """Acknowledge everything up to ``seq`` (default: all received)."""
        seq = self.last_seq if seq is None else seq
        if seq > self.acked_seq:
            await self._send({"type": "ack", "seq": seq})
            self.acked_seq = seq

    async def send(
        self, conversation_id: str, envelope: Mapping[str, Any], client_msg_id: str | None = None
    ) -> str:
        """Send a message; the answer is a ``sent`` frame. Returns the client_msg_id."""
        client_msg_id = client_msg_id or str(uuid.uuid4())
        await self._send(
            {
                "type": "send",
                "conversation_id": conversation_id,
                "client_msg_id": client_msg_id,
                "envelope": dict(envelope),
            }
        )
        return client_msg_id

    async def typing(self, conversation_id: str) -> None:
        await self._send({"type": "typing", "conversation_id": conversation_id})

    async def read(self, conversation_id: str, up_to: str) -> None:
        await self._send({"type": "read", "conversation_id": conversation_id, "up_to": up_to})

    async def ping(self) -> None:
        await self._send({"type": "ping"})

    async def slideshow_start(
        self, conversation_id: str, media_ids: list[str], autoplay_s: int | None = None
    ) -> None:
        """Start a slideshow; both participants get ``slideshow`` frames (docs/media.md)."""
        frame: dict[str, Any] = {
            "type": "slideshow_start",
            "conversation_id": conversation_id,
            "media_ids": list(media_ids),
        }
        if autoplay_s is not None:
            frame["autoplay_s"] = autoplay_s
        await self._send(frame)

    async def slideshow_nav(
        self, conversation_id: str, action: str, base_version: int, **target: Any
    ) -> None:
        """``action``: next, prev, goto (with ``index=`` or ``media_id=``), pause, resume."""
        await self._send(
            {
                "type": "slideshow_nav",
                "conversation_id": conversation_id,
                "action": action,
                "base_version": base_version,
                **target,
            }
        )

    async def slideshow_stop(self, conversation_id: str) -> None:
        await self._send({"type": "slideshow_stop", "conversation_id": conversation_id})

    async def send_raw(self, data: str | bytes) -> None:
        """Send anything (for tests of the server's input handling)."""
        await self._connection.send(data)

    async def close(self) -> None:
        await self._connection.close()


class Client:
    """An authenticated API client for one user (and optionally one device)."""

    def __init__(
        self, base_url: str, token: str, *, device_id: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.device_id = device_id
        self.user: dict[str, Any] | None = None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    @classmethod
    async def dev_login(cls, base_url: str, username: str, **kwargs: Any) -> Self:
        """Log in through ``POST /api/auth/dev-login`` (dev login must be enabled)."""
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30.0) as http:
            body = _check(await http.post("/api/auth/dev-login", json={"username": username}))
        client = cls(base_url, body["access_token"], **kwargs)
        client.user = body["user"]
        return client

    @property
    def user_id(self) -> str:
        assert self.user is not None, "call me() or log in first"
        return str(self.user["id"])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- account, users, devices -----------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        self.user = _check(await self._http.get("/api/me"))
        return self.user

    async def logout(self) -> None:
        _check(await self._http.post("/api/auth/logout"))

    async def update_settings(self, **settings: bool) -> dict[str, Any]:
        result: dict[str, Any] = _check(await self._http.patch("/api/me/settings", json=settings))
        return result

    async def user_by_name(self, username: str) -> dict[str, Any]:
        result: dict[str, Any] = _check(await self._http.get(f"/api/users/by-name/{username}"))
        return result

    async def register_device(
        self,
        device_id: str,
        *,
        public_key: Mapping[str, str],
        signing_key: Mapping[str, str],
        name: str = "python",
    ) -> dict[str, Any]:
        body = {"public_key": dict(public_key), "signing_key": dict(signing_key), "name": name}
        result: dict[str, Any] = _check(
            await self._http.put(f"/api/devices/{device_id}", json=body)
        )
        self.device_id = self.device_id or device_id
        return result

    async def delete_device(self, device_id: str) -> None:
        _check(await self._http.delete(f"/api/devices/{device_id}"))

    async def devices(self, user_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _check(await self._http.get(f"/api/users/{user_id}/devices"))
        return result

    async def block(self, user_id: str) -> None:
        _check(await self._http.put(f"/api/blocks/{user_id}"))

    async def unblock(self, user_id: str) -> None:
        _check(await self._http.delete(f"/api/blocks/{user_id}"))

    # --- conversations and messages --------------------------------------------------------

    async def open_conversation(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _check(
            await self._http.post("/api/conversations", json={"user_id": user_id})
        )
        return result

    async def conversations(self, *, before: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        result: dict[str, Any] = _check(await self._http.get("/api/conversations", params=params))
        return result

    async def history(
        self, conversation_id: str, *, before: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        result: dict[str, Any] = _check(
            await self._http.get(f"/api/conversations/{conversation_id}/messages", params=params)
        )
        return result

    async def send(
        self,
        conversation_id: str,
        envelope: Mapping[str, Any],
        *,
        client_msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /api/messages``; returns the message. Raises ApiError (e.g. 409
        ``device_mismatch`` with ``error["missing"]`` / ``error["stale"]``)."""
        body = {
            "conversation_id": conversation_id,
            "client_msg_id": client_msg_id or str(uuid.uuid4()),
            "envelope": dict(envelope),
        }
        answer = _check(await self._http.post("/api/messages", json=body))
        message: dict[str, Any] = answer["message"]
        return message

    async def mark_read(self, conversation_id: str, up_to: str) -> None:
        _check(
            await self._http.post(
                f"/api/conversations/{conversation_id}/read", json={"up_to": up_to}
            )
        )

    async def upload_media(self, data: bytes, filename: str = "upload") -> dict[str, Any]:
        """``POST /api/media``: the stored media with signed URLs (docs/media.md)."""
        media: dict[str, Any] = _check(
            await self._http.post("/api/media", files={"file": (filename, data)})
        )
        return media

    async def media(self, media_id: str) -> dict[str, Any]:
        """Fresh signed URLs for a media you uploaded or that was shared with you."""
        media: dict[str, Any] = _check(await self._http.get(f"/api/media/{media_id}"))
        return media

    async def share_media(self, media_id: str, conversation_id: str) -> None:
        """Let the other participant of ``conversation_id`` get this media's URLs."""
        _check(await self._http.put(f"/api/media/{media_id}/shares/{conversation_id}"))

    async def events(self, since: int = 0, wait_s: int = 0) -> dict[str, Any]:
        """The long-poll fallback: ``{events, next}``, waiting up to ``wait_s`` (<= 30)
        seconds for the first event."""
        result: dict[str, Any] = _check(
            await self._http.get(
                "/api/events",
                params={"since": since, "timeout": wait_s},
                timeout=wait_s + 10.0,
            )
        )
        return result

    # --- realtime --------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, *, resume_from: int | None = None) -> AsyncIterator[Stream]:
        """Open ``/ws``, authenticate (the token travels in the first frame, never in
        the URL) and wait for ``hello``. Raises ApiError(401) when refused."""
        ws_url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        url = f"{ws_url}/ws"
        if self.device_id:
            url += f"?device_id={self.device_id}"
        # The server keeps at most 256 unacked events in flight; a deep queue lets a
        # close handshake through even when the application stopped reading.
        async with websockets.connect(
            url, max_size=None, max_queue=1024, compression=None
        ) as connection:
            auth: dict[str, Any] = {"type": "auth", "token": self.token}
            if resume_from is not None:
                auth["resume_from"] = resume_from
            await connection.send(json.dumps(auth))
            hello = json.loads(await connection.recv())
            if hello.get("type") != "hello":
                raise ApiError(401, hello)
            stream = Stream(connection, int(hello["resume_from"]))
            stream.hello = hello
            yield stream
