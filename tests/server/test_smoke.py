from __future__ import annotations

from typing import Any

import pytest

from omninudge_core.errors import Unavailable
from tests.server.conftest import RunningServer, run_server


async def test_health_answers_healthy(server: RunningServer) -> None:
    async with server.client() as http:
        r = await http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"
    assert r.json()["database_kind"] == "sqlite"  # the embedded default


class _DownStorage:
    """The real storage, except that it no longer answers pings."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def ping(self) -> None:
        raise Unavailable("database down")


async def test_health_is_503_unhealthy_when_the_database_is_down(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with run_server({}, tmp_path_factory.mktemp("down")) as running:
        services = running.app.state.services
        services.storage = _DownStorage(services.storage)
        async with running.client() as http:
            r = await http.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert (body["status"], body["database"]) == ("unhealthy", "unavailable")
    assert set(body) >= {"status", "database", "redis", "reddit_api", "uptime"}
