"""The same server scenarios on PostgreSQL (``DATABASE_URL=postgresql://…``).

This module overrides the ``server`` fixture; the scenarios imported below are then
collected here a second time and run, unchanged, against a PostgreSQL-backed server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.server.conftest import RunningServer, run_server
from tests.server.test_authorization import (
    test_an_outsider_gets_403_or_404_on_a_conversation_of_others,
)
from tests.server.test_bad_input import (
    pair,  # noqa: F401 - a fixture the imported test needs
    test_bad_inputs_get_their_documented_codes_and_write_nothing,
)
from tests.server.test_rest import (
    test_conversation_list_shows_unread_and_read_clears_it,
    test_envelope_must_cover_exactly_the_current_devices,
    test_history_pages_are_keyset_and_complete,
    test_long_poll_returns_the_stream_and_the_read_receipt,
    test_send_answers_201_then_200_for_the_same_client_msg_id,
)
from tests.server.test_ws import (
    test_dropped_connection_resumes_from_last_ack_without_loss,
    test_live_exchange_sent_then_delivered_then_read,
    test_offline_recipient_gets_200_messages_in_order_once,
)

__all__ = [
    "test_an_outsider_gets_403_or_404_on_a_conversation_of_others",
    "test_bad_inputs_get_their_documented_codes_and_write_nothing",
    "test_conversation_list_shows_unread_and_read_clears_it",
    "test_dropped_connection_resumes_from_last_ack_without_loss",
    "test_envelope_must_cover_exactly_the_current_devices",
    "test_history_pages_are_keyset_and_complete",
    "test_live_exchange_sent_then_delivered_then_read",
    "test_long_poll_returns_the_stream_and_the_read_receipt",
    "test_offline_recipient_gets_200_messages_in_order_once",
    "test_send_answers_201_then_200_for_the_same_client_msg_id",
]


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database_factory: Callable[[], str],
) -> AsyncIterator[RunningServer]:
    env = {
        "DATABASE_URL": postgres_database_factory(),
        "OMNINUDGE_JWT_SECRET": "test-secret-" + "x" * 40,
    }
    async with run_server(env, tmp_path_factory.mktemp("pg"), send_burst=100_000.0) as running:
        yield running


async def test_the_server_runs_on_postgres(server: RunningServer) -> None:
    async with server.client() as http:
        health = (await http.get("/health")).json()
    assert (health["status"], health["database_kind"]) == ("healthy", "postgres")
