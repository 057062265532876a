"""The stand-in answers with Reddit's recorded shapes: same keys, statuses and headers."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.reddit.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    FIXTURES,
    StandInFactory,
    StandInServer,
)


def recorded(name: str) -> dict[str, Any]:
    response: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))["response"]
    return response


def keys(value: dict[str, Any]) -> set[str]:
    return set(value)


async def get(standin: StandInServer, path: str, token: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(
            standin.url + path,
            params={**params, "raw_json": "1"},
            headers={"Authorization": f"bearer {token}"},
        )


async def post(
    standin: StandInServer, path: str, token: str, form: dict[str, str]
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            standin.url + path, data=form, headers={"Authorization": f"bearer {token}"}
        )


async def test_me_and_about_have_the_recorded_keys(standin: StandInServer) -> None:
    token = standin.token("alice")
    me = await get(standin, "/api/v1/me", token)
    assert keys(me.json()) == keys(recorded("me_200.json")["body"])
    assert keys(me.json()["subreddit"]) == keys(recorded("me_200.json")["body"]["subreddit"])
    about = await get(standin, "/user/bob/about", token)
    assert about.json()["kind"] == "t2"
    assert keys(about.json()["data"]) == keys(recorded("user_about_200.json")["body"]["data"])
    for name in ("x-ratelimit-used", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in me.headers


async def test_listings_have_the_recorded_envelope_and_children(standin: StandInServer) -> None:
    answer = await get(standin, "/r/popular/hot", standin.token("alice"), limit="10")
    body, real = answer.json(), recorded("subreddit_popular_hot_200.json")["body"]
    assert body["kind"] == "Listing"
    assert keys(body["data"]) == keys(real["data"])
    child_keys = {frozenset(c["data"]) for c in real["data"]["children"]}
    assert all(frozenset(c["data"]) in child_keys for c in body["data"]["children"])


async def test_messages_have_the_recorded_t4_keys(standin: StandInServer) -> None:
    alice = standin.token("alice")
    sent = await post(standin, "/api/compose/", alice,
                      {"api_type": "json", "to": "bob", "subject": "s", "text": "t"})  # fmt: skip
    assert sent.json() == recorded("compose_200_success.json")["body"]
    t4_keys = keys(recorded("message_sent_200.json")["body"]["data"]["children"][0]["data"])
    for box, token in (("sent", alice), ("inbox", standin.token("bob"))):
        listing = (await get(standin, f"/message/{box}/", token)).json()
        real = recorded(f"message_{box}_200.json")["body"]
        assert keys(listing["data"]) <= keys(real["data"]) | {"before"}
        assert keys(listing["data"]["children"][0]["data"]) == t4_keys
    message = listing["data"]["children"][0]["data"]
    reply = await post(standin, "/api/comment/", standin.token("bob"),
                       {"api_type": "json", "thing_id": message["name"], "text": "r"})  # fmt: skip
    real_reply = recorded("comment_reply_to_message_200.json")["body"]
    assert keys(reply.json()["json"]) == keys(real_reply["json"])
    assert keys(reply.json()["json"]["data"]["things"][0]["data"]) == keys(
        real_reply["json"]["data"]["things"][0]["data"]
    )


async def test_compose_without_api_type_gets_the_legacy_jquery_answer(
    standin: StandInServer,
) -> None:
    answer = await post(standin, "/api/compose", standin.token("alice"),
                        {"to": "bob", "subject": "s", "text": "t"})  # fmt: skip
    assert "jquery" in answer.json()


async def test_error_shapes_are_the_recorded_ones(standin: StandInServer) -> None:
    bad = await get(standin, "/api/v1/me", "nope")
    real = recorded("me_401_invalid_token.json")
    assert (bad.status_code, bad.json()) == (401, real["body"])
    assert bad.headers["www-authenticate"] == real["headers"]["www-authenticate"]

    scope = await get(standin, "/api/v1/me", standin.token("alice", scopes="read"))
    real = recorded("me_403_insufficient_scope.json")
    assert (scope.status_code, scope.json()) == (403, real["body"])
    assert scope.headers["www-authenticate"] == real["headers"]["www-authenticate"]

    standin.reddit.quarantined.add("tiananmenaquarefalse")
    quarantined = await get(standin, "/r/tiananmenaquarefalse/top", standin.token("alice"), t="all")
    real = recorded("subreddit_listing_quarantined_403.json")
    assert (quarantined.status_code, quarantined.json()) == (403, real["body"])

    missing = await get(
        standin, "/api/v1/user/thisusershouldnotexist/trophies", standin.token("alice")
    )
    real = recorded("user_doesnt_exist_400.json")
    assert (missing.status_code, missing.json()) == (400, real["body"])

    for name in ("bob", "a"):
        answer = await get(standin, "/api/username_available", standin.token("alice"), user=name)
        expected = (
            "username_available_false.json"
            if name == "bob"
            else ("username_available_bad_username_json_errors.json")
        )
        assert answer.json() == recorded(expected)["body"]


async def test_token_answers_have_the_recorded_keys(standin: StandInServer) -> None:
    standin.reddit.consent_user = "alice"
    client = standin.client()
    async with httpx.AsyncClient() as http:
        redirect = await http.get(client.authorize_url(state="s"))
        code = httpx.URL(redirect.headers["location"]).params["code"]
        auth = (CLIENT_ID, CLIENT_SECRET)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
        }
        grant = await http.post(standin.url + "/api/v1/access_token", data=form, auth=auth)
        reused = await http.post(standin.url + "/api/v1/access_token", data=form, auth=auth)
        refresh_token = grant.json()["refresh_token"]
        revoked = await http.post(
            standin.url + "/api/v1/revoke_token",
            data={"token": refresh_token, "token_type_hint": "refresh_token"},
            auth=auth,
        )
    await client.aclose()
    real = recorded("oauth_token_authorization_code_permanent_200.json")["body"]
    assert keys(grant.json()) == keys(real)
    assert (grant.json()["token_type"], grant.json()["expires_in"]) == ("bearer", 86400)
    assert (reused.status_code, reused.json()) == (
        400,
        recorded("oauth_token_authorization_code_invalid_code_400.json")["body"],
    )
    assert (revoked.status_code, revoked.content) == (200, b"")


async def test_over_budget_answers_the_html_429_with_retry_after(
    make_standin: StandInFactory,
) -> None:
    standin = await make_standin(rate_limit=1, retry_after_s=2)
    token = standin.token("alice")
    await get(standin, "/api/v1/me", token)
    answer = await get(standin, "/api/v1/me", token)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "2"
    assert "whoa there, pardner!" in answer.text
    assert "x-ratelimit-remaining" not in answer.headers
