"""Private messages through the stand-in: compose, inbox/sent, replies, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from omninudge_adapters.reddit import (
    HttpxRedditClient,
    RedditRecipientRefused,
    RedditRequestRejected,
)
from omninudge_core.errors import (
    Forbidden,
    InvalidFrame,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
)
from tests.reddit.conftest import StandInServer


async def test_compose_reaches_the_recipients_inbox_and_the_senders_sent_box(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    alice, bob = standin.token("alice"), standin.token("bob")
    await reddit.compose(alice, to="bob", subject="hello", text="join me on OmniNudge")
    assert standin.reddit.requests["POST /api/compose"] == 1
    assert standin.reddit.log[-1].form["api_type"] == "json"

    inbox = await reddit.messages(bob, box="inbox")
    sent = await reddit.messages(alice, box="sent")
    assert [m.body for m in inbox.messages] == ["join me on OmniNudge"]
    assert sent.messages == inbox.messages
    message = inbox.messages[0]
    assert (message.author, message.dest, message.subject) == ("alice", "bob", "hello")
    assert message.fullname.startswith("t4_")
    assert abs(message.created_utc - datetime.now(UTC).timestamp()) < 5
    assert (await reddit.messages(alice, box="inbox")).messages == ()


async def test_reply_lands_in_the_same_thread_in_both_directions(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    alice, bob = standin.token("alice"), standin.token("bob")
    await reddit.compose(alice, to="u/bob", subject="hi", text="first")
    first = (await reddit.messages(bob, box="inbox")).messages[0]
    reply = await reddit.reply(bob, thing_id=first.fullname, text="second")
    assert (reply.author, reply.dest, reply.subject) == ("bob", "alice", "re: hi")

    threads = await reddit.messages(alice, box="messages")
    assert [m.body for m in threads.messages] == ["first", "second"]
    assert [m.body for m in (await reddit.messages(alice, box="inbox")).messages] == ["second"]


async def test_inbox_pages_newest_first_with_after(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    alice, bob = standin.token("alice"), standin.token("bob")
    for n in range(5):
        await reddit.compose(alice, to="bob", subject="s", text=f"m{n}")
    first = await reddit.messages(bob, box="inbox", limit=3)
    assert [m.body for m in first.messages] == ["m4", "m3", "m2"]
    assert first.after == first.messages[-1].fullname
    rest = await reddit.messages(bob, box="inbox", after=first.after, limit=3)
    assert [m.body for m in rest.messages] == ["m1", "m0"]
    assert rest.after is None
    assert all(r.query.get("mark") == "false" for r in standin.reddit.log if "/message/" in r.path)


async def test_unknown_recipient_is_not_found(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    with pytest.raises(NotFound) as caught:
        await reddit.compose(standin.token("alice"), to="nobody_here", subject="s", text="t")
    assert caught.value.code == "reddit_user_not_found"


async def test_recipient_who_only_takes_trusted_senders_refuses(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.add_user("picky", whitelist_only=True)
    with pytest.raises(RedditRecipientRefused) as caught:
        await reddit.compose(standin.token("alice"), to="picky", subject="s", text="t")
    assert caught.value.details()["reddit_code"] == "NOT_WHITELISTED_BY_USER_MESSAGE"


async def test_compose_ratelimit_carries_the_wait_reddit_names(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.compose_wait_s = 6
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as caught:
        await reddit.compose(standin.token("alice"), to="bob", subject="s", text="t")
    assert timedelta(seconds=5) < caught.value.retry_at - before < timedelta(seconds=8)


async def test_empty_text_is_rejected_by_reddit(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    with pytest.raises(RedditRequestRejected) as caught:
        await reddit.compose(standin.token("alice"), to="bob", subject="s", text="")
    assert caught.value.details() == {"reddit_code": "NO_TEXT", "field": "text"}


async def test_oversize_or_malformed_input_never_reaches_reddit(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    token = standin.token("alice")
    with pytest.raises(PayloadTooLarge):
        await reddit.compose(token, to="bob", subject="s" * 101, text="t")
    with pytest.raises(PayloadTooLarge):
        await reddit.compose(token, to="bob", subject="s", text="t" * 10_001)
    with pytest.raises(InvalidFrame):
        await reddit.compose(token, to="bob smith", subject="s", text="t")
    with pytest.raises(InvalidFrame):
        await reddit.reply(token, thing_id="t3_abc", text="t")
    with pytest.raises(InvalidFrame):
        await reddit.messages(token, box="trash")
    assert standin.reddit.log == []


async def test_redirected_message_listing_means_messaging_unavailable(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.messaging_redirect = True
    with pytest.raises(Unavailable) as caught:
        await reddit.messages(standin.token("alice"), box="messages")
    assert caught.value.code == "reddit_messaging_unavailable"


async def test_replying_to_someone_elses_thread_is_refused(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.add_user("carol")
    await reddit.compose(standin.token("alice"), to="bob", subject="s", text="private")
    message = (await reddit.messages(standin.token("bob"), box="inbox")).messages[0]
    with pytest.raises(Forbidden) as caught:
        await reddit.reply(standin.token("carol"), thing_id=message.fullname, text="hi")
    assert caught.value.code == "reddit_forbidden"
