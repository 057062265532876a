"""The storage contract: one ``storage`` fixture, parametrized over every backend.

The PostgreSQL database is shared by the whole test run, so no test may assume an
empty database: every test makes its own users and ids (uuid) through ``Factory``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Device,
    Envelope,
    Message,
    Origin,
    UpgradeState,
    User,
    WrappedKey,
)
from omninudge_core.ports import Appended, Storage

BACKENDS = ["memory", "sqlite", "postgres"]

# A fixed, microsecond-precise base time: round trips must keep every digit.
T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


@pytest.fixture(scope="session", params=BACKENDS)
async def storage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Storage]:
    """One Storage per backend for the session (tests never assume it is empty)."""
    backend: str = request.param
    if backend == "memory":
        from omninudge_adapters.memory.storage import open_memory_storage

        async with open_memory_storage() as memory_storage:
            yield memory_storage
    elif backend == "sqlite":
        from omninudge_adapters.sqlite import open_sqlite_storage

        path: Path = tmp_path_factory.mktemp("sqlite") / "contract.db"
        async with open_sqlite_storage(path) as sqlite_storage:
            yield sqlite_storage
    else:
        pytest.importorskip("omninudge_adapters.postgres")
        from omninudge_adapters.postgres import open_postgres_storage

        dsn = request.getfixturevalue("postgres_dsn")
        async with open_postgres_storage(dsn) as postgres_storage:
            yield postgres_storage


def jwk(seed: str) -> dict[str, str]:
    return {"kty": "EC", "crv": "P-256", "x": f"x-{seed}", "y": f"y-{seed}"}


def envelope(sender_device: str, devices: Sequence[str]) -> Envelope:
    return Envelope(
        v=1,
        alg="ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        sender_device=sender_device,
        epk="ZXBr",
        iv="aXY",
        ct=new_id("ct-"),
        keys=tuple(WrappedKey(device=d, iv="aXYy", wk=f"wk-{d}") for d in sorted(devices)),
        sig="c2ln",
    )


class Factory:
    """Makes fresh, uniquely named rows in a shared store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def user(self, *, on_platform: bool = True, reddit_id: str | None = None) -> User:
        name = new_id("User_")[:20]
        return await self.storage.users.create(
            User(
                id=new_id("u-"),
                username=name,
                created_at=T0,
                reddit_id=reddit_id if reddit_id is not None else new_id("r"),
                on_platform=on_platform,
            )
        )

    async def device(self, user: User, *, at: datetime = T0) -> Device:
        device_id = new_id("d-")
        stored, _ = await self.storage.devices.put(
            Device(
                user_id=user.id,
                device_id=device_id,
                public_key=jwk(device_id),
                signing_key=jwk("s" + device_id),
                name="laptop",
                created_at=at,
            )
        )
        return stored

    async def conversation(
        self,
        a: User | None = None,
        b: User | None = None,
        *,
        kind: ConversationKind = ConversationKind.PLATFORM,
        upgrade_state: UpgradeState = UpgradeState.NONE,
        at: datetime = T0,
    ) -> Conversation:
        a = a or await self.user()
        b = b or await self.user()
        conversation, _ = await self.storage.conversations.get_or_create(
            Conversation(
                id=new_id("c-"),
                participants=(a.id, b.id),
                kind=kind,
                created_at=at,
                upgrade_state=upgrade_state,
            )
        )
        return conversation

    def message(
        self,
        conversation: Conversation,
        sender_id: str,
        *,
        at: datetime = T0,
        client_msg_id: str | None = None,
        text: str | None = None,
        reddit_fullname: str | None = None,
    ) -> Message:
        if text is None and reddit_fullname is None:
            return Message(
                id=new_id("m-"),
                conversation_id=conversation.id,
                sender_id=sender_id,
                client_msg_id=client_msg_id or new_id("cm-"),
                origin=Origin.PLATFORM,
                sent_at=at,
                envelope=envelope("d-sender", ["d-1", "d-2"]),
            )
        return Message(
            id=new_id("m-"),
            conversation_id=conversation.id,
            sender_id=sender_id,
            client_msg_id=client_msg_id or new_id("cm-"),
            origin=Origin.REDDIT,
            sent_at=at,
            text=text if text is not None else "hello from reddit",
            reddit_fullname=reddit_fullname,
        )

    async def send(
        self,
        conversation: Conversation,
        sender_id: str,
        *,
        at: datetime = T0,
        client_msg_id: str | None = None,
    ) -> Appended:
        """Append a platform message with one delivery row, notifying both participants."""
        message = self.message(conversation, sender_id, at=at, client_msg_id=client_msg_id)
        recipient = conversation.other(sender_id)
        delivery = DeliveryRecord(
            message_id=message.id,
            recipient_id=recipient,
            device_id="d-1",
            status=DeliveryStatus.ACCEPTED,
            updated_at=at,
        )
        return await self.storage.messages.append(
            message, [delivery], notify=list(conversation.participants)
        )

    async def send_many(
        self, conversation: Conversation, sender_id: str, count: int, *, start: datetime = T0
    ) -> list[Message]:
        sent = []
        for index in range(count):
            appended = await self.send(conversation, sender_id, at=start + timedelta(seconds=index))
            sent.append(appended.message)
        return sent


@pytest.fixture
def make(storage: Storage) -> Factory:
    return Factory(storage)
