"""SQLite stores for users, devices and blocks."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from omninudge_adapters.sqlite.database import SqliteDatabase, Transaction, chunked
from omninudge_adapters.sqlite.rows import (
    block_from_row,
    device_from_row,
    dump_json,
    from_micros,
    load_json,
    placeholders,
    settings_json,
    to_micros,
    user_from_row,
)
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import Block, Device, DeviceId, User, UserId

__all__ = ["SqliteBlockStore", "SqliteDeviceStore", "SqliteUserStore"]

_USER_COLUMNS = "id, username, reddit_id, on_platform, settings, created_at"


class SqliteUserStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, user: User) -> User:
        """Insert a user. Raises Conflict on a taken id, username (case-insensitive)
        or reddit_id."""

        async def work(tx: Transaction) -> User:
            await tx.execute(
                "INSERT INTO users (id, username, username_lower, reddit_id, on_platform,"
                " settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    user.id,
                    user.username,
                    user.username.lower(),
                    user.reddit_id,
                    int(user.on_platform),
                    settings_json(user.settings),
                    to_micros(user.created_at),
                ),
            )
            return user

        return await self._db.transaction(work)

    async def get(self, user_id: UserId) -> User:
        """Raises NotFound."""
        row = await self._db.fetchone(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"no user {user_id}")
        return user_from_row(row)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        found: dict[UserId, User] = {}
        for chunk in chunked(list(dict.fromkeys(user_ids))):
            rows = await self._db.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({placeholders(len(chunk))})",
                chunk,
            )
            found.update((row["id"], user_from_row(row)) for row in rows)
        return {uid: found[uid] for uid in user_ids if uid in found}

    async def by_username(self, username: str) -> User | None:
        row = await self._db.fetchone(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username_lower = ?", (username.lower(),)
        )
        return None if row is None else user_from_row(row)

    async def by_usernames(self, usernames: Sequence[str]) -> dict[str, User]:
        """Keys are the lower-cased usernames that were found."""
        found: dict[str, User] = {}
        for chunk in chunked(list(dict.fromkeys(name.lower() for name in usernames))):
            rows = await self._db.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users"
                f" WHERE username_lower IN ({placeholders(len(chunk))})",
                chunk,
            )
            for row in rows:
                user = user_from_row(row)
                found[user.username.lower()] = user
        return found

    async def by_reddit_id(self, reddit_id: str) -> User | None:
        row = await self._db.fetchone(
            f"SELECT {_USER_COLUMNS} FROM users WHERE reddit_id = ?", (reddit_id,)
        )
        return None if row is None else user_from_row(row)

    async def update(self, user: User) -> User:
        """Replace username, reddit_id, on_platform and settings (created_at is kept).
        Raises NotFound, or Conflict on a taken username/reddit_id."""

        async def work(tx: Transaction) -> User:
            row = await tx.fetchone("SELECT created_at FROM users WHERE id = ?", (user.id,))
            if row is None:
                raise NotFound(f"no user {user.id}")
            await tx.execute(
                "UPDATE users SET username = ?, username_lower = ?, reddit_id = ?,"
                " on_platform = ?, settings = ? WHERE id = ?",
                (
                    user.username,
                    user.username.lower(),
                    user.reddit_id,
                    int(user.on_platform),
                    settings_json(user.settings),
                    user.id,
                ),
            )
            return attrs.evolve(user, created_at=from_micros(row["created_at"]))

        return await self._db.transaction(work)


_DEVICE_COLUMNS = "device_id, user_id, public_key, signing_key, name, created_at"


class SqliteDeviceStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, device: Device) -> tuple[Device, bool]:
        """Register a device; the same keys again is a no-op (created=False). Raises
        Conflict when the id exists with other keys or belongs to another user."""

        async def work(tx: Transaction) -> tuple[Device, bool]:
            row = await tx.fetchone(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device.device_id,)
            )
            if row is not None:
                existing = device_from_row(row)
                if (
                    existing.user_id != device.user_id
                    or load_json(row["public_key"]) != dict(device.public_key)
                    or load_json(row["signing_key"]) != dict(device.signing_key)
                ):
                    raise Conflict(f"device {device.device_id} is registered with other keys")
                return existing, False
            await tx.execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    device.device_id,
                    device.user_id,
                    dump_json(dict(device.public_key)),
                    dump_json(dict(device.signing_key)),
                    device.name,
                    to_micros(device.created_at),
                ),
            )
            stored = attrs.evolve(
                device, public_key=dict(device.public_key), signing_key=dict(device.signing_key)
            )
            return stored, True

        return await self._db.transaction(work)

    async def for_user(self, user_id: UserId) -> list[Device]:
        """Oldest first."""
        return (await self.for_users([user_id]))[user_id]

    async def for_users(self, user_ids: Sequence[UserId]) -> dict[UserId, list[Device]]:
        """Every asked user is a key; devices oldest first."""
        found: dict[UserId, list[Device]] = {uid: [] for uid in user_ids}
        for chunk in chunked(list(found)):
            rows = await self._db.fetchall(
                f"SELECT {_DEVICE_COLUMNS} FROM devices"
                f" WHERE user_id IN ({placeholders(len(chunk))})"
                " ORDER BY created_at, device_id",
                chunk,
            )
            for row in rows:
                found[row["user_id"]].append(device_from_row(row))
        return found

    async def delete(self, user_id: UserId, device_id: DeviceId) -> None:
        """Raises NotFound if the user has no such device."""

        async def work(tx: Transaction) -> None:
            deleted = await tx.execute(
                "DELETE FROM devices WHERE device_id = ? AND user_id = ?", (device_id, user_id)
            )
            if deleted == 0:
                raise NotFound(f"user {user_id} has no device {device_id}")

        await self._db.transaction(work)


class SqliteBlockStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, block: Block) -> None:
        """Idempotent: blocking again keeps the first block."""

        async def work(tx: Transaction) -> None:
            await tx.execute(
                "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (blocker_id, blocked_id) DO NOTHING",
                (block.blocker_id, block.blocked_id, to_micros(block.created_at)),
            )

        await self._db.transaction(work)

    async def delete(self, blocker_id: UserId, blocked_id: UserId) -> None:
        """Idempotent."""

        async def work(tx: Transaction) -> None:
            await tx.execute(
                "DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?",
                (blocker_id, blocked_id),
            )

        await self._db.transaction(work)

    async def blocked_by(self, blocker_id: UserId) -> list[Block]:
        """Oldest first."""
        rows = await self._db.fetchall(
            "SELECT blocker_id, blocked_id, created_at FROM blocks WHERE blocker_id = ?"
            " ORDER BY created_at, blocked_id",
            (blocker_id,),
        )
        return [block_from_row(row) for row in rows]

    async def between(self, a: UserId, b: UserId) -> bool:
        """True if either user blocks the other."""
        row = await self._db.fetchone(
            "SELECT 1 FROM blocks WHERE (blocker_id = ? AND blocked_id = ?)"
            " OR (blocker_id = ? AND blocked_id = ?) LIMIT 1",
            (a, b, b, a),
        )
        return row is not None
