"""A message acknowledged by the SQLite adapter survives SIGKILL of the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from omninudge_adapters.sqlite import open_sqlite_storage
from tests.contract.durability import append_until_killed, check_survivors


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-normal"])
async def test_acknowledged_messages_survive_sigkill(tmp_path: Path, backend: str) -> None:
    """With synchronous FULL, and with NORMAL (a killed process is not a power loss)."""
    path = tmp_path / "durable.db"
    run = await append_until_killed(backend, str(path), kill_after=60)
    async with open_sqlite_storage(path) as storage:
        await check_survivors(storage, run)


async def test_database_is_writable_after_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    await append_until_killed("sqlite", str(path), kill_after=10)
    second = await append_until_killed("sqlite", str(path), kill_after=10)
    async with open_sqlite_storage(path) as storage:
        await check_survivors(storage, second)
