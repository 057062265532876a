"""Drills run real ``omninudge serve`` processes (tests/drills/harness.py). At the end of
the run, every drill server's log (DEBUG level) is scanned for every token, envelope
and credential the drills handed out: none may appear."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.drills.harness import LOGS, SECRETS


def leaked_secrets() -> list[tuple[str, str]]:
    """(log file name, secret prefix) for every secret found in a drill log."""
    found = []
    for path in LOGS:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        found.extend((path.name, secret[:12]) for secret in SECRETS if secret in text)
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_drill_log() -> Iterator[None]:
    yield
    leaks = leaked_secrets()
    assert not leaks, f"secrets found in server logs: {leaks[:10]}"
