"""Media and slideshow scenarios on PostgreSQL (``DATABASE_URL=postgresql://…``).

This module overrides the ``server`` fixture; the scenarios imported below are then
collected here a second time and run, unchanged, against a PostgreSQL-backed server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.server.conftest import RunningServer, run_server
from tests.server.test_media_access import (
    test_media_is_visible_to_its_uploader_and_after_sharing_to_the_other_participant,
)
from tests.server.test_slideshow import (
    pair,  # noqa: F401 - a fixture the imported tests need
    test_a_reconnecting_client_resumes_the_slideshow_from_the_stream,
    test_two_clients_navigating_against_each_other_end_on_the_same_state,
)

__all__ = [
    "test_a_reconnecting_client_resumes_the_slideshow_from_the_stream",
    "test_media_is_visible_to_its_uploader_and_after_sharing_to_the_other_participant",
    "test_two_clients_navigating_against_each_other_end_on_the_same_state",
]


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database_factory: Callable[[], str],
) -> AsyncIterator[RunningServer]:
    env = {
        "DATABASE_URL": postgres_database_factory(),
        "OMNINUDGE_JWT_SECRET": "test-secret-" + "y" * 40,
    }
    async with run_server(env, tmp_path_factory.mktemp("pg-media")) as running:
        yield running
