"""Every recorded Reddit response goes through the adapter's mapping: success shapes
parse into core types, error shapes raise the typed error a caller can act on."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from omninudge_adapters.reddit import parsing
from omninudge_adapters.reddit.errors import (
    RedditAppRevoked,
    RedditGrantInvalid,
    RedditInsufficientScope,
    RedditRequestRejected,
    RedditTokenInvalid,
)
from omninudge_adapters.reddit.parsing import RedditResponse
from omninudge_core.errors import Forbidden, NotFound, OmniNudgeError, RateLimited, Unavailable
from omninudge_core.models import RedditMessage
from omninudge_core.ports import (
    RedditGrant,
    RedditIdentity,
    RedditListing,
    RedditMessagePage,
    RedditProfile,
)
from tests.reddit.conftest import FIXTURES

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def load(name: str) -> RedditResponse:
    recorded = json.loads((FIXTURES / name).read_text(encoding="utf-8"))["response"]
    body = recorded.get("body")
    return RedditResponse(
        status=recorded["status"],
        headers={k.lower(): v for k, v in recorded["headers"].items()},
        body=body,
        text=recorded.get("body_text", json.dumps(body)),
    )


def through_api(
    parse: Callable[[Any], object], context: parsing.Context = "default"
) -> Callable[[RedditResponse], object]:
    def run(response: RedditResponse) -> object:
        error = parsing.api_error(response, NOW, context=context, subject="x")
        if error is not None:
            raise error
        return parse(response.body)

    return run


def through_token(response: RedditResponse) -> object:
    error = parsing.token_error(response, NOW)
    if error is not None:
        raise error
    return parsing.grant_from_json(response.body) if response.body else None


def through_form(response: RedditResponse) -> object:
    error = parsing.api_error(response, NOW) or parsing.json_errors_error(response.body, now=NOW)
    if error is not None:
        raise error
    if not isinstance(response.body.get("json"), dict):
        raise Unavailable("legacy answer", code="reddit_bad_response")
    return response.body


# file -> (how the adapter reads it, what comes out: a type, or an error class and code)
EXPECTED: dict[str, tuple[Callable[[RedditResponse], object], Any]] = {
    "comment_reply_to_message_200.json": (
        lambda r: parsing.reply_from_json(r.body, NOW),
        RedditMessage,
    ),
    "compose_200_jquery_without_api_type.json": (
        through_form,
        (Unavailable, "reddit_bad_response"),
    ),
    "compose_200_success.json": (through_form, dict),
    "me_200.json": (through_api(parsing.identity_from_json), RedditIdentity),
    "me_401_invalid_token.json": (
        through_api(parsing.identity_from_json),
        (RedditTokenInvalid, "reddit_token_invalid"),
    ),
    "me_403_insufficient_scope.json": (
        through_api(parsing.identity_from_json),
        (RedditInsufficientScope, "reddit_insufficient_scope"),
    ),
    "message_inbox_200.json": (
        through_api(parsing.messages_from_json, "messages"),
        RedditMessagePage,
    ),
    "message_messages_200.json": (
        through_api(parsing.messages_from_json, "messages"),
        RedditMessagePage,
    ),
    "message_sent_200.json": (
        through_api(parsing.messages_from_json, "messages"),
        RedditMessagePage,
    ),
    "message_thread_by_id_200.json": (
        through_api(parsing.messages_from_json, "messages"),
        RedditMessagePage,
    ),
    "message_thread_by_id_403.json": (
        through_api(parsing.messages_from_json, "messages"),
        (Forbidden, "reddit_forbidden"),
    ),
    "message_unread_empty_200.json": (
        through_api(parsing.messages_from_json, "messages"),
        RedditMessagePage,
    ),
    "oauth_revoke_refresh_token_200_empty.json": (through_token, type(None)),
    "oauth_token_429_json.json": (through_token, (RateLimited, "reddit_rate_limited")),
    "oauth_token_authorization_code_invalid_code_2016_200_invalid_grant.json": (
        through_token,
        (RedditGrantInvalid, "reddit_grant_invalid"),
    ),
    "oauth_token_authorization_code_invalid_code_400.json": (
        through_token,
        (RedditGrantInvalid, "reddit_grant_invalid"),
    ),
    "oauth_token_authorization_code_permanent_200.json": (through_token, RedditGrant),
    "oauth_token_authorization_code_temporary_200.json": (through_token, RedditGrant),
    "oauth_token_refresh_200.json": (through_token, RedditGrant),
    "oauth_token_refresh_invalid_token_400.json": (
        through_token,
        (RedditGrantInvalid, "reddit_grant_invalid"),
    ),
    "read_all_messages_202.json": (through_api(lambda body: body), dict),
    "read_message_200.json": (through_api(lambda body: body), dict),
    "subreddit_askreddit_new_200.json": (
        through_api(parsing.listing_from_json, "listing"),
        RedditListing,
    ),
    "subreddit_askreddit_top_all_200.json": (
        through_api(parsing.listing_from_json, "listing"),
        RedditListing,
    ),
    "subreddit_listing_quarantined_403.json": (
        through_api(parsing.listing_from_json, "listing"),
        (NotFound, "subreddit_quarantined"),
    ),
    "subreddit_popular_hot_200.json": (
        through_api(parsing.listing_from_json, "listing"),
        RedditListing,
    ),
    "user_about_200.json": (through_api(parsing.profile_from_json, "user"), RedditProfile),
    "user_doesnt_exist_400.json": (
        through_api(parsing.profile_from_json, "user"),
        (NotFound, "reddit_user_not_found"),
    ),
    "username_available_bad_username_json_errors.json": (
        through_api(lambda body: parsing.username_available_from_json(body, NOW)),
        (RedditRequestRejected, "reddit_rejected"),
    ),
    "username_available_false.json": (
        through_api(lambda body: parsing.username_available_from_json(body, NOW)),
        bool,
    ),
    "username_available_true.json": (
        through_api(lambda body: parsing.username_available_from_json(body, NOW)),
        bool,
    ),
}


def test_every_recorded_fixture_has_an_expectation() -> None:
    assert {p.name for p in Path(FIXTURES).glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_response_maps_to_its_type_or_typed_error(name: str) -> None:
    read, expected = EXPECTED[name]
    response = load(name)
    if isinstance(expected, tuple):
        error_type, code = expected
        with pytest.raises(error_type) as caught:
            read(response)
        assert isinstance(caught.value, OmniNudgeError)
        assert caught.value.code == code
    else:
        assert isinstance(read(response), expected)


def test_popular_listing_maps_media_types_as_recorded() -> None:
    listing = parsing.listing_from_json(load("subreddit_popular_hot_200.json").body)
    kinds = [post.media_type for post in listing.posts]
    # REDDIT.md §4: 50 image, 24 hosted:video + 1 rich:video, 14 galleries, 5 links, 6 self.
    assert (kinds.count("image"), kinds.count("video")) == (50, 25)
    assert (kinds.count("gallery"), kinds.count("link"), kinds.count("self")) == (14, 5, 6)
    assert listing.after == "t3_1skbyfv"
    assert len(listing.posts) == 100


def test_placeholder_thumbnails_become_none_and_urls_stay() -> None:
    listing = parsing.listing_from_json(load("subreddit_popular_hot_200.json").body)
    thumbnails = [post.thumbnail for post in listing.posts]
    assert thumbnails.count(None) == 7  # 5 "self" + 2 "spoiler"
    assert all(t.startswith("https://") for t in thumbnails if t is not None)


def test_preview_urls_are_unescaped_when_raw_json_was_not_honoured() -> None:
    body = load("subreddit_popular_hot_200.json").body
    child = next(c for c in body["data"]["children"] if c["data"].get("post_hint") == "image")
    raw_url = child["data"]["preview"]["images"][0]["source"]["url"]
    assert "&" in raw_url
    child["data"]["preview"]["images"][0]["source"]["url"] = raw_url.replace("&", "&amp;")
    post = parsing.post_from_data(child["data"])
    assert post.preview_url == raw_url


def test_nsfw_flag_is_carried() -> None:
    listing = parsing.listing_from_json(load("subreddit_askreddit_new_200.json").body)
    assert any(post.over_18 for post in listing.posts)
    assert not all(post.over_18 for post in listing.posts)


def test_inbox_keeps_messages_and_skips_comment_replies() -> None:
    page = parsing.messages_from_json(load("message_inbox_200.json").body)
    assert len(page.messages) == 98  # 98 t4 + 2 t1 recorded
    assert all(m.fullname.startswith("t4_") for m in page.messages)
    assert sum(m.author is None for m in page.messages) == 1  # a subreddit-sourced one


def test_threads_are_flattened_with_their_replies() -> None:
    page = parsing.messages_from_json(load("message_messages_200.json").body)
    flat = parsing.messages_from_json(load("message_messages_200.json").body, include_replies=False)
    assert len(flat.messages) == 99
    assert len(page.messages) == 99 + 72  # REDDIT.md §5.2: 72 nested messages
    assert len({m.fullname for m in page.messages}) == len(page.messages)


def test_identity_has_base36_id_without_prefix() -> None:
    me = parsing.identity_from_json(load("me_200.json").body)
    assert me.id == "o77bz"
    assert me.icon_img is not None
    assert "&height=256" in me.icon_img


def test_reply_returns_the_new_message_in_its_thread() -> None:
    message = parsing.reply_from_json(load("comment_reply_to_message_200.json").body, NOW)
    assert message.fullname == "t4_42p7ugk"
    assert message.subject == "re: [direct chat room]"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("You are doing that too much. Try again in 6 seconds.", 6),
        ("You are doing that too much. Try again in 9 minutes.", 540),
        ("Take a break for 500 milliseconds before trying again.", 0.5),
        ("You are doing that too much. Try again in 1 minute.", 60),
    ],
)
def test_ratelimit_message_wait_is_parsed(text: str, seconds: float) -> None:
    assert parsing.parse_ratelimit_wait(text) == seconds
    body = {"json": {"errors": [["RATELIMIT", text, "ratelimit"]]}}
    error = parsing.json_errors_error(body, now=NOW)
    assert isinstance(error, RateLimited)
    assert error.retry_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("status", "headers", "body", "context", "code"),
    [
        (404, {}, {"reason": "banned", "message": "Not Found", "error": 404}, "listing",
         "subreddit_banned"),
        (403, {}, {"reason": "private", "message": "Forbidden", "error": 403}, "listing",
         "subreddit_private"),
        (302, {"location": "/subreddits/search"}, None, "listing", "subreddit_not_found"),
        (302, {"location": "/login/"}, None, "messages", "reddit_messaging_unavailable"),
        (404, {}, {"message": "Not Found", "error": 404}, "user", "reddit_user_not_found"),
        (401, {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'}, None,
         "default", "reddit_token_invalid"),
        (503, {}, None, "default", "reddit_unavailable"),
        (429, {"retry-after": "7"}, None, "default", "reddit_rate_limited"),
    ],
)  # fmt: skip
def test_documented_error_shapes_map_to_typed_errors(
    status: int, headers: dict[str, str], body: object, context: parsing.Context, code: str
) -> None:
    error = parsing.api_error(RedditResponse(status, headers, body), NOW, context=context)
    assert error is not None
    assert error.code == code
    if isinstance(error, RateLimited):
        assert error.retry_at == NOW + timedelta(seconds=7)


def test_any_token_body_with_error_is_a_failure_whatever_the_status() -> None:
    for error_name in ("invalid_grant", "whatever"):
        error = parsing.token_error(RedditResponse(200, {}, {"error": error_name}), NOW)
        assert isinstance(error, RedditGrantInvalid)
    for status in (401, 403):
        refused = parsing.token_error(RedditResponse(status, {}, None), NOW)
        assert isinstance(refused, RedditAppRevoked)


@pytest.mark.parametrize(
    ("code", "error_code"),
    [
        ("USER_DOESNT_EXIST", "reddit_user_not_found"),
        ("NOT_WHITELISTED_BY_USER_MESSAGE", "reddit_recipient_refused"),
        ("USER_BLOCKED", "reddit_recipient_refused"),
        ("NO_TEXT", "reddit_rejected"),
        ("TOO_LONG", "reddit_rejected"),
    ],
)
def test_compose_json_errors_map_to_typed_errors(code: str, error_code: str) -> None:
    body = {"json": {"errors": [[code, "some message", "to"]]}}
    error = parsing.json_errors_error(body, now=NOW)
    assert error is not None
    assert error.code == error_code
