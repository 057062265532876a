"""Revocations contract: a revoked token id is remembered until its ``until``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from omninudge_core.ports import Revocations
from tests.contract.ports_fixtures import REVOCATIONS, Harness


@pytest.fixture(params=sorted(REVOCATIONS))
async def revocations(request: pytest.FixtureRequest) -> AsyncIterator[Harness[Revocations]]:
    async with REVOCATIONS[request.param]() as harness:
        yield harness


async def test_a_token_is_not_revoked_until_revoked(revocations: Harness[Revocations]) -> None:
    assert await revocations.port.is_revoked("jti-1") is False
    await revocations.port.revoke("jti-1", revocations.now() + timedelta(minutes=5))
    assert await revocations.port.is_revoked("jti-1") is True
    assert await revocations.port.is_revoked("jti-2") is False


async def test_a_revocation_is_forgotten_at_its_until(revocations: Harness[Revocations]) -> None:
    await revocations.port.revoke("jti-1", revocations.now() + timedelta(seconds=0.5))
    await revocations.port.revoke("jti-2", revocations.now() + timedelta(minutes=5))
    await revocations.advance(1.2)
    assert await revocations.port.is_revoked("jti-1") is False
    assert await revocations.port.is_revoked("jti-2") is True


async def test_revoking_an_already_expired_token_is_a_no_op(
    revocations: Harness[Revocations],
) -> None:
    await revocations.port.revoke("jti-1", revocations.now() - timedelta(seconds=10))
    assert await revocations.port.is_revoked("jti-1") is False


async def test_revoking_twice_is_idempotent(revocations: Harness[Revocations]) -> None:
    until = revocations.now() + timedelta(minutes=5)
    await revocations.port.revoke("jti-1", until)
    await revocations.port.revoke("jti-1", until)
    assert await revocations.port.is_revoked("jti-1") is True
