"""Storage contract: users, devices, blocks (run on every backend)."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import Block, Device, User, UserSettings
from omninudge_core.ports import Storage
from tests.contract.conftest import T0, Factory, jwk, new_id

# --- users ---------------------------------------------------------------------------


async def test_created_user_reads_back_identical(storage: Storage) -> None:
    user = User(
        id=new_id("u-"),
        username=new_id("Mixed_")[:18],
        created_at=T0,
        reddit_id=new_id("r"),
        on_platform=False,
        settings=UserSettings(read_receipts=False, presence_visible=True),
    )
    assert await storage.users.create(user) == user
    assert await storage.users.get(user.id) == user


async def test_get_unknown_user_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.users.get(new_id("nobody-"))


async def test_username_is_unique_case_insensitively(storage: Storage, make: Factory) -> None:
    user = await make.user()
    clash = User(id=new_id("u-"), username=user.username.upper(), created_at=T0)
    with pytest.raises(Conflict):
        await storage.users.create(clash)
    assert await storage.users.by_username(user.username.upper()) == user


async def test_reddit_id_is_unique(storage: Storage, make: Factory) -> None:
    user = await make.user()
    clash = User(
        id=new_id("u-"), username=new_id("x")[:20], created_at=T0, reddit_id=user.reddit_id
    )
    with pytest.raises(Conflict):
        await storage.users.create(clash)


async def test_user_id_is_unique(storage: Storage, make: Factory) -> None:
    user = await make.user()
    with pytest.raises(Conflict):
        await storage.users.create(attrs.evolve(user, username=new_id("x")[:20], reddit_id=None))


async def test_users_without_reddit_id_do_not_clash(storage: Storage) -> None:
    for _ in range(2):
        user = User(id=new_id("u-"), username=new_id("n")[:20], created_at=T0)
        assert await storage.users.create(user) == user


async def test_lookup_by_username_ignores_case(storage: Storage, make: Factory) -> None:
    user = await make.user()
    assert await storage.users.by_username(user.username.lower()) == user
    assert await storage.users.by_username(user.username.upper()) == user
    assert await storage.users.by_username(new_id("ghost")) is None


async def test_by_usernames_keys_found_users_by_lower_case_name(
    storage: Storage, make: Factory
) -> None:
    a, b = await make.user(), await make.user()
    ghost = new_id("ghost")
    found = await storage.users.by_usernames([a.username.upper(), b.username, ghost])
    assert found == {a.username.lower(): a, b.username.lower(): b}


async def test_by_reddit_id(storage: Storage, make: Factory) -> None:
    user = await make.user()
    assert user.reddit_id is not None
    assert await storage.users.by_reddit_id(user.reddit_id) == user
    assert await storage.users.by_reddit_id(new_id("r")) is None


async def test_get_many_leaves_out_missing_users(storage: Storage, make: Factory) -> None:
    a, b = await make.user(), await make.user()
    assert await storage.users.get_many([a.id, new_id("ghost-"), b.id]) == {a.id: a, b.id: b}
    assert await storage.users.get_many([]) == {}


async def test_update_replaces_mutable_fields_and_frees_the_old_name(
    storage: Storage, make: Factory
) -> None:
    user = await make.user(on_platform=False)
    renamed = attrs.evolve(
        user,
        username=new_id("Renamed")[:20],
        reddit_id=new_id("r"),
        on_platform=True,
        settings=UserSettings(read_receipts=False, presence_visible=False),
    )
    assert await storage.users.update(renamed) == renamed
    assert await storage.users.get(user.id) == renamed
    assert await storage.users.by_username(renamed.username) == renamed
    assert await storage.users.by_username(user.username) is None
    assert user.reddit_id is not None
    assert await storage.users.by_reddit_id(user.reddit_id) is None
    # The old name is free again.
    reuse = User(id=new_id("u-"), username=user.username, created_at=T0)
    assert await storage.users.create(reuse) == reuse


async def test_update_keeps_created_at(storage: Storage, make: Factory) -> None:
    user = await make.user()
    updated = await storage.users.update(attrs.evolve(user, created_at=T0 + timedelta(days=9)))
    assert updated.created_at == T0
    assert (await storage.users.get(user.id)).created_at == T0


async def test_update_to_own_name_in_other_case_is_allowed(storage: Storage, make: Factory) -> None:
    user = await make.user()
    recased = attrs.evolve(user, username=user.username.swapcase())
    assert await storage.users.update(recased) == recased


async def test_update_unknown_user_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.users.update(User(id=new_id("u-"), username=new_id("n")[:20], created_at=T0))


async def test_update_to_taken_username_or_reddit_id_conflicts(
    storage: Storage, make: Factory
) -> None:
    a, b = await make.user(), await make.user()
    with pytest.raises(Conflict):
        await storage.users.update(attrs.evolve(b, username=a.username.upper()))
    with pytest.raises(Conflict):
        await storage.users.update(attrs.evolve(b, reddit_id=a.reddit_id))
    assert await storage.users.get(b.id) == b


# --- devices -------------------------------------------------------------------------


async def test_device_put_then_same_keys_again_is_a_no_op(storage: Storage, make: Factory) -> None:
    user = await make.user()
    device = Device(
        user_id=user.id,
        device_id=new_id("d-"),
        public_key=jwk("p"),
        signing_key=jwk("s"),
        name="phone",
        created_at=T0,
    )
    stored, created = await storage.devices.put(device)
    assert (stored, created) == (device, True)
    again, created_again = await storage.devices.put(
        attrs.evolve(device, name="renamed", created_at=T0 + timedelta(hours=1))
    )
    assert (again, created_again) == (device, False)
    assert await storage.devices.for_user(user.id) == [device]


async def test_device_with_other_keys_conflicts(storage: Storage, make: Factory) -> None:
    user = await make.user()
    device = await make.device(user)
    with pytest.raises(Conflict):
        await storage.devices.put(attrs.evolve(device, public_key=jwk("other")))
    with pytest.raises(Conflict):
        await storage.devices.put(attrs.evolve(device, signing_key=jwk("other")))
    assert await storage.devices.for_user(user.id) == [device]


async def test_device_of_another_user_conflicts(storage: Storage, make: Factory) -> None:
    owner, thief = await make.user(), await make.user()
    device = await make.device(owner)
    with pytest.raises(Conflict):
        await storage.devices.put(attrs.evolve(device, user_id=thief.id))
    assert await storage.devices.for_user(thief.id) == []


async def test_devices_listed_oldest_first(storage: Storage, make: Factory) -> None:
    user = await make.user()
    newer = await make.device(user, at=T0 + timedelta(minutes=5))
    older = await make.device(user, at=T0)
    assert await storage.devices.for_user(user.id) == [older, newer]


async def test_for_users_has_every_asked_user_as_key(storage: Storage, make: Factory) -> None:
    a, b, c = await make.user(), await make.user(), await make.user()
    da = await make.device(a)
    db1 = await make.device(b, at=T0)
    db2 = await make.device(b, at=T0 + timedelta(seconds=1))
    assert await storage.devices.for_users([a.id, b.id, c.id]) == {
        a.id: [da],
        b.id: [db1, db2],
        c.id: [],
    }


async def test_deleted_device_is_gone_and_its_id_reusable(storage: Storage, make: Factory) -> None:
    user = await make.user()
    keep = await make.device(user)
    drop = await make.device(user, at=T0 + timedelta(seconds=1))
    await storage.devices.delete(user.id, drop.device_id)
    assert await storage.devices.for_user(user.id) == [keep]
    fresh = attrs.evolve(drop, public_key=jwk("new"))
    assert await storage.devices.put(fresh) == (fresh, True)


async def test_delete_unknown_or_foreign_device_raises_not_found(
    storage: Storage, make: Factory
) -> None:
    owner, other = await make.user(), await make.user()
    device = await make.device(owner)
    with pytest.raises(NotFound):
        await storage.devices.delete(owner.id, new_id("d-"))
    with pytest.raises(NotFound):
        await storage.devices.delete(other.id, device.device_id)
    assert await storage.devices.for_user(owner.id) == [device]


# --- blocks --------------------------------------------------------------------------


async def test_block_is_idempotent_and_directional(storage: Storage, make: Factory) -> None:
    a, b, c = await make.user(), await make.user(), await make.user()
    block = Block(blocker_id=a.id, blocked_id=b.id, created_at=T0)
    await storage.blocks.put(block)
    await storage.blocks.put(block)
    assert await storage.blocks.blocked_by(a.id) == [block]
    assert await storage.blocks.blocked_by(b.id) == []
    assert await storage.blocks.between(a.id, b.id)
    assert await storage.blocks.between(b.id, a.id)
    assert not await storage.blocks.between(a.id, c.id)


async def test_blocked_by_lists_oldest_first(storage: Storage, make: Factory) -> None:
    a, b, c = await make.user(), await make.user(), await make.user()
    later = Block(blocker_id=a.id, blocked_id=b.id, created_at=T0 + timedelta(seconds=1))
    first = Block(blocker_id=a.id, blocked_id=c.id, created_at=T0)
    await storage.blocks.put(later)
    await storage.blocks.put(first)
    assert await storage.blocks.blocked_by(a.id) == [first, later]


async def test_unblock_is_idempotent(storage: Storage, make: Factory) -> None:
    a, b = await make.user(), await make.user()
    await storage.blocks.put(Block(blocker_id=a.id, blocked_id=b.id, created_at=T0))
    await storage.blocks.delete(a.id, b.id)
    await storage.blocks.delete(a.id, b.id)
    assert not await storage.blocks.between(a.id, b.id)
    assert await storage.blocks.blocked_by(a.id) == []
