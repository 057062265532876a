"""Blocking rules: a block in either direction forbids live interaction; history stays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.errors import Blocked
from omninudge_core.models import Block, UserSettings
from omninudge_core.policies import blocking
from omninudge_core.policies.blocking import (
    blocked_between,
    ensure_may_drive_slideshow,
    ensure_may_message,
    may_drive_slideshow,
    may_message,
    may_read_history,
    may_see_presence,
    may_see_typing,
    relation_from,
    sends_read_receipt,
)

VISIBLE = UserSettings(presence_visible=True)
HIDDEN = UserSettings(presence_visible=False)

users = st.sampled_from(["alice", "bob", "carol"])
relations = st.frozensets(st.tuples(users, users), max_size=6)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_no_block_allows_everything() -> None:
    none: frozenset[tuple[str, str]] = frozenset()
    assert may_message(none, "alice", "bob")
    assert may_see_typing(none, "alice", "bob")
    assert may_see_presence(none, "alice", "bob", VISIBLE)
    assert may_drive_slideshow(none, "alice", "bob")


@pytest.mark.parametrize("pair", [("alice", "bob"), ("bob", "alice")])
def test_a_block_in_either_direction_forbids_live_interaction(pair: tuple[str, str]) -> None:
    blocks = frozenset({pair})
    for a, b in [("alice", "bob"), ("bob", "alice")]:
        assert not may_message(blocks, a, b)
        assert not may_see_typing(blocks, a, b)
        assert not may_see_presence(blocks, a, b, VISIBLE)
        assert not may_drive_slideshow(blocks, a, b)
        assert may_read_history(blocks, a, b)


def test_a_block_between_others_does_not_matter() -> None:
    blocks = frozenset({("alice", "carol")})
    assert may_message(blocks, "alice", "bob")
    assert may_see_presence(blocks, "bob", "carol", VISIBLE)


def test_hidden_presence_is_hidden_from_others_but_not_from_oneself() -> None:
    none: frozenset[tuple[str, str]] = frozenset()
    assert not may_see_presence(none, "alice", "bob", HIDDEN)
    assert may_see_presence(none, "bob", "bob", HIDDEN)


def test_read_receipts_follow_the_readers_setting_and_blocks() -> None:
    none: frozenset[tuple[str, str]] = frozenset()
    assert sends_read_receipt(none, "bob", UserSettings(read_receipts=True), "alice")
    assert not sends_read_receipt(none, "bob", UserSettings(read_receipts=False), "alice")
    blocks = frozenset({("alice", "bob")})
    assert not sends_read_receipt(blocks, "bob", UserSettings(read_receipts=True), "alice")


def test_ensure_functions_raise_blocked_with_its_code() -> None:
    blocks = frozenset({("bob", "alice")})
    with pytest.raises(Blocked) as caught:
        ensure_may_message(blocks, "alice", "bob")
    assert caught.value.code == "blocked"
    assert caught.value.status == 403
    with pytest.raises(Blocked):
        ensure_may_drive_slideshow(blocks, "bob", "alice")
    ensure_may_message(frozenset(), "alice", "bob")  # no block: no error


def test_relation_from_block_records() -> None:
    blocks = [Block("alice", "bob", NOW), Block("carol", "alice", NOW)]
    assert relation_from(blocks) == frozenset({("alice", "bob"), ("carol", "alice")})


@given(relations, users, users)
def test_blocking_rules_are_symmetric(blocks: frozenset[tuple[str, str]], a: str, b: str) -> None:
    assert blocked_between(blocks, a, b) == blocked_between(blocks, b, a)
    assert may_message(blocks, a, b) == may_message(blocks, b, a)
    assert may_see_typing(blocks, a, b) == may_message(blocks, a, b)
    assert may_drive_slideshow(blocks, a, b) == may_message(blocks, a, b)
    assert may_message(blocks, a, b) == ((a, b) not in blocks and (b, a) not in blocks)


def test_module_exports_what_it_documents() -> None:
    assert set(blocking.__all__) <= set(dir(blocking))
