"""The drill-facing limits come from the environment (docs/configuration.md) and a bad
value stops start-up with one line."""

from __future__ import annotations

import pytest

from omninudge_server.config import ConfigError, load_settings


def test_limits_default_to_the_documented_values() -> None:
    settings = load_settings({}, data_dir="/tmp/omninudge-limits")
    assert settings.send_rate_per_s == 10.0
    assert settings.send_burst == 50.0
    assert settings.database_timeout_s == 3.0
    assert settings.ws_max_connections_per_user == 20
    assert settings.ws_send_timeout_s == 10.0


def test_limits_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            "OMNINUDGE_SEND_RATE": "2.5",
            "OMNINUDGE_SEND_BURST": "1000",
            "OMNINUDGE_DATABASE_TIMEOUT_S": "0.5",
            "OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER": "3",
            "OMNINUDGE_WS_SEND_TIMEOUT_S": "1",
        },
        data_dir="/tmp/omninudge-limits",
    )
    assert (settings.send_rate_per_s, settings.send_burst) == (2.5, 1000.0)
    assert settings.database_timeout_s == 0.5
    assert settings.ws_max_connections_per_user == 3
    assert settings.ws_send_timeout_s == 1.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OMNINUDGE_SEND_RATE", "0"),
        ("OMNINUDGE_SEND_BURST", "-1"),
        ("OMNINUDGE_DATABASE_TIMEOUT_S", "soon"),
        ("OMNINUDGE_WS_SEND_TIMEOUT_S", "inf"),
        ("OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER", "2.5"),
        ("OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER", "0"),
    ],
)
def test_a_bad_limit_is_a_one_line_configuration_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, data_dir="/tmp/omninudge-limits")
