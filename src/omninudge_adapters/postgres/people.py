"""Users, devices and blocks on PostgreSQL (ports.UserStore, DeviceStore, BlockStore)."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.json import Jsonb

from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    DEVICE_COLUMNS,
    USER_COLUMNS,
    block_from_row,
    device_from_row,
    settings_to_json,
    user_from_row,
)
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import Block, Device, DeviceId, User, UserId

__all__ = ["PostgresBlockStore", "PostgresDeviceStore", "PostgresUserStore"]

# The lookups of the message hot path (``Database.lookup``: merged across callers).
_USERS = f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY(%(keys)s)"
_DEVICES_OF = (
    f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ANY(%(keys)s)"
    " ORDER BY created_at, device_id"
)
_BLOCKS_AMONG = (
    "SELECT blocker_id, blocked_id FROM blocks"
    " WHERE blocker_id = ANY(%(keys)s) AND blocked_id = ANY(%(keys)s)"
)


class PostgresUserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user: User) -> User:
        """Raises Conflict if the username (case-insensitive) or reddit_id is taken."""
        async with self._db.connection("create user") as conn:
            await conn.execute(
                f"INSERT INTO users ({USER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    user.id,
                    user.username,
                    user.reddit_id,
                    user.on_platform,
                    Jsonb(settings_to_json(user.settings)),
                    user.created_at,
                ),
            )
        return user

    async def get(self, user_id: UserId) -> User:
        """Raises NotFound."""
        rows = await self._db.lookup("get user", _USERS, [user_id])
        if not rows:
            raise NotFound(f"no user {user_id!r}")
        return user_from_row(rows[0])

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        if not user_ids:
            return {}
        rows = await self._db.lookup("get users", _USERS, user_ids)
        users = (user_from_row(row) for row in rows)
        return {user.id: user for user in users}

    async def by_username(self, username: str) -> User | None:
        found = await self.by_usernames([username])
        return found.get(username.lower())

    async def by_usernames(self, usernames: Sequence[str]) -> dict[str, User]:
        """Keys are the lower-cased usernames that were found."""
        if not usernames:
            return {}
        async with self._db.connection("find users by name") as conn:
            cur = await conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE lower(username) = ANY(%s)",
                ([name.lower() for name in usernames],),
            )
            rows = await cur.fetchall()
        users = (user_from_row(row) for row in rows)
        return {user.username.lower(): user for user in users}

    async def by_reddit_id(self, reddit_id: str) -> User | None:
        async with self._db.connection("find user by reddit id") as conn:
            cur = await conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE reddit_id = %s", (reddit_id,)
            )
            row = await cur.fetchone()
        return None if row is None else user_from_row(row)

    async def update(self, user: User) -> User:
        """Raises NotFound, or Conflict on a taken username/reddit_id."""
        async with self._db.connection("update user") as conn:
            cur = await conn.execute(
                "UPDATE users SET username = %s, reddit_id = %s, on_platform = %s, settings = %s"
                f" WHERE id = %s RETURNING {USER_COLUMNS}",
                (
                    user.username,
                    user.reddit_id,
                    user.on_platform,
                    Jsonb(settings_to_json(user.settings)),
                    user.id,
                ),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no user {user.id!r}")
        return user_from_row(row)


class PostgresDeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, device: Device) -> tuple[Device, bool]:
        """Returns (device, created). Raises Conflict when the device id exists with
        other keys or belongs to another user."""
        async with self._db.connection("register device") as conn:
            cur = await conn.execute(
                f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
                (
                    device.user_id,
                    device.device_id,
                    Jsonb(dict(device.public_key)),
                    Jsonb(dict(device.signing_key)),
                    device.name,
                    device.created_at,
                ),
            )
            if await cur.fetchone() is not None:
                return device, True
            cur = await conn.execute(
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = %s", (device.device_id,)
            )
            row = await cur.fetchone()
        if row is None:
            # Deleted between the two statements: the caller may simply retry.
            raise Conflict(f"device {device.device_id!r} changed concurrently")
        stored = device_from_row(row)
        same_keys = dict(stored.public_key) == dict(device.public_key) and dict(
            stored.signing_key
        ) == dict(device.signing_key)
        if stored.user_id != device.user_id or not same_keys:
            raise Conflict(f"device {device.device_id!r} is registered with other keys")
        return stored, False

    async def for_user(self, user_id: UserId) -> list[Device]:
        """Oldest first."""
        found = await self.for_users([user_id])
        return found[user_id]

    async def for_users(self, user_ids: Sequence[UserId]) -> dict[UserId, list[Device]]:
        """Every asked user is a key (an empty list when they have no device)."""
        result: dict[UserId, list[Device]] = {user_id: [] for user_id in user_ids}
        if not user_ids:
            return result
        rows = await self._db.lookup("list devices", _DEVICES_OF, list(result))
        for row in rows:
            device = device_from_row(row)
            result[device.user_id].append(device)
        return result

    async def delete(self, user_id: UserId, device_id: DeviceId) -> None:
        """Raises NotFound if the user has no such device."""
        async with self._db.connection("delete device") as conn:
            cur = await conn.execute(
                "DELETE FROM devices WHERE user_id = %s AND device_id = %s", (user_id, device_id)
            )
        if cur.rowcount == 0:
            raise NotFound(f"user {user_id!r} has no device {device_id!r}")


class PostgresBlockStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, block: Block) -> None:
        """Idempotent (the first block's time is kept)."""
        async with self._db.connection("block user") as conn:
            await conn.execute(
                "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (block.blocker_id, block.blocked_id, block.created_at),
            )

    async def delete(self, blocker_id: UserId, blocked_id: UserId) -> None:
        """Idempotent."""
        async with self._db.connection("unblock user") as conn:
            await conn.execute(
                "DELETE FROM blocks WHERE blocker_id = %s AND blocked_id = %s",
                (blocker_id, blocked_id),
            )

    async def blocked_by(self, blocker_id: UserId) -> list[Block]:
        async with self._db.connection("list blocks") as conn:
            cur = await conn.execute(
                "SELECT blocker_id, blocked_id, created_at FROM blocks WHERE blocker_id = %s"
                " ORDER BY created_at, blocked_id",
                (blocker_id,),
            )
            rows = await cur.fetchall()
        return [block_from_row(row) for row in rows]

    async def between(self, a: UserId, b: UserId) -> bool:
        """True if either user blocks the other."""
        rows = await self._db.lookup("check blocks", _BLOCKS_AMONG, [a, b], key_columns=2)
        return any((row[0], row[1]) in ((a, b), (b, a)) for row in rows)
