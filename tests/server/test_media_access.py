"""Who may see media, signed URLs (local directory), and the same upload on S3."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from omninudge_server.client import Client
from tests.server.conftest import RunningServer, login, run_server
from tests.server.media_helpers import FIXTURES, fetch, metadata_left, tiny_jpeg, upload
from tests.services_s3 import S3Settings


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
    return urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())))


async def test_media_is_visible_to_its_uploader_and_after_sharing_to_the_other_participant(
    server: RunningServer, people: Any
) -> None:
    alice, bob, carol = await people(), await people(), await people()
    conversation_id = await alice.conversation_with(bob)
    media_id = (await upload(alice.http, tiny_jpeg())).json()["id"]

    assert (await alice.http.get(f"/api/media/{media_id}")).status_code == 200
    # Not shared yet: to anyone else it does not exist.
    for outsider in (bob, carol):
        r = await outsider.http.get(f"/api/media/{media_id}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    assert (await bob.http.get("/api/media/no-such-media")).status_code == 404
    assert (await bob.http.get("/api/media/bad%20id")).status_code == 400

    # Shared in the conversation by a slideshow: Bob may see it, Carol still not.
    a = Client(server.base_url, alice.token)
    async with a.connect() as stream:
        await stream.slideshow_start(conversation_id, [media_id])
        while (await stream.recv(5))["type"] != "slideshow":
            pass
    await a.aclose()
    r = await bob.http.get(f"/api/media/{media_id}")
    assert r.status_code == 200
    assert (await fetch(r.json()["url"])).status_code == 200
    assert (await carol.http.get(f"/api/media/{media_id}")).status_code == 404

    async with server.client() as anonymous:
        assert (await anonymous.get(f"/api/media/{media_id}")).status_code == 401


async def test_the_uploader_shares_media_with_a_conversation_they_are_in(
    people: Any,
) -> None:
    """PUT /api/media/{id}/shares/{conversation}: for a picture sent inside an encrypted
    message, which the server cannot read."""
    alice, bob, carol = await people(), await people(), await people()
    with_bob = await alice.conversation_with(bob)
    bob_and_carol = await bob.conversation_with(carol)
    media_id = (await upload(alice.http, tiny_jpeg())).json()["id"]
    share = f"/api/media/{media_id}/shares/{with_bob}"

    assert (await bob.http.put(share)).status_code == 404  # not bob's media
    r = await alice.http.put(f"/api/media/{media_id}/shares/{bob_and_carol}")
    assert r.status_code == 404  # not alice's conversation
    assert (await bob.http.get(f"/api/media/{media_id}")).status_code == 404

    for _ in range(2):  # idempotent
        assert (await alice.http.put(share)).status_code == 204
    r = await bob.http.get(f"/api/media/{media_id}")
    assert r.status_code == 200
    assert (await fetch(r.json()["thumbnail_url"])).status_code == 200
    assert (await carol.http.get(f"/api/media/{media_id}")).status_code == 404

    other = (await upload(alice.http, tiny_jpeg("blue"))).json()["id"]
    assert (await bob.http.put(f"/api/blocks/{alice.id}")).status_code == 204
    r = await alice.http.put(f"/api/media/{other}/shares/{with_bob}")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "blocked")
    assert (await bob.http.get(f"/api/media/{other}")).status_code == 404


async def test_each_request_signs_fresh_urls(people: Any) -> None:
    alice = await people()
    body = (await upload(alice.http, tiny_jpeg())).json()
    await asyncio.sleep(1.1)
    again = (await alice.http.get(f"/api/media/{body['id']}")).json()
    assert again["expires_at"] > body["expires_at"]
    assert again["url"] != body["url"]
    assert (await fetch(again["url"])).content == (await fetch(body["url"])).content


async def test_a_tampered_or_missing_signature_is_403(people: Any) -> None:
    alice = await people()
    body = (await upload(alice.http, tiny_jpeg())).json()
    url, thumb = body["url"], body["thumbnail_url"]
    exp = parse_qs(urlsplit(url).query)["exp"][0]
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    thumb_path = urlsplit(thumb).path
    bad = [
        _with_query(url, sig="0" * 64),
        _with_query(url, exp=str(int(exp) + 3600)),  # a longer life is a different URL
        _with_query(url, exp="soon"),
        urlunsplit(urlsplit(url)._replace(query="")),
        # A valid signature for one key does not open another.
        urlunsplit(urlsplit(url)._replace(path=thumb_path, query=f"exp={exp}&sig={sig}")),
    ]
    for candidate in bad:
        r = await fetch(candidate)
        assert r.status_code == 403, candidate
        assert r.json()["error"]["code"] == "invalid_signature"
    assert (await fetch(url)).status_code == 200


async def test_a_signed_url_stops_working_when_it_expires(tmp_path: Path) -> None:
    async with run_server({}, tmp_path, media_url_ttl_s=1) as running:
        alice = await login(running)
        body = (await upload(alice.http, tiny_jpeg())).json()
        assert (await fetch(body["url"])).status_code == 200
        await asyncio.sleep(2.1)
        expired = await fetch(body["url"])
        assert expired.status_code == 403
        fresh = (await alice.http.get(f"/api/media/{body['id']}")).json()
        assert (await fetch(fresh["url"])).status_code == 200
        await alice.close()


async def test_a_validly_signed_url_for_a_missing_blob_is_404(people: Any) -> None:
    alice = await people()
    body = (await upload(alice.http, tiny_jpeg())).json()
    services = alice.running.app.state.services
    key = urlsplit(body["url"]).path.removeprefix("/media/")
    await services.media.blobs.delete(key)
    assert (await fetch(body["url"])).status_code == 404


async def test_uploads_work_the_same_on_s3(tmp_path: Path, s3_settings: S3Settings) -> None:
    env = {
        "S3_BUCKET": s3_settings.bucket,
        "S3_ENDPOINT_URL": s3_settings.endpoint_url,
        "S3_REGION": s3_settings.region,
        "AWS_ACCESS_KEY_ID": s3_settings.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_settings.secret_access_key,
    }
    async with run_server(env, tmp_path) as running:
        alice = await login(running)
        photo = (FIXTURES / "gen_gps_orientation6.jpg").read_bytes()
        body = (await upload(alice.http, photo)).json()
        assert body["url"].startswith(s3_settings.endpoint_url)
        assert "exp=" in body["url"]
        stored = await fetch(body["url"])
        assert stored.status_code == 200
        assert metadata_left(stored.content) == []
        assert (await fetch(body["thumbnail_url"])).status_code == 200

        video = (FIXTURES / "fixture.webm").read_bytes()
        clip = (await upload(alice.http, video)).json()
        assert (await fetch(clip["url"])).content == video

        # No local blob route with S3, and nothing written to the data directory.
        key_path = urlsplit(body["url"]).path.split(s3_settings.bucket, 1)[1]
        async with running.client() as anonymous:
            assert (await anonymous.get(f"/media{key_path}?exp=1&sig=x")).status_code == 404
        assert not (tmp_path / "media").exists()

        # A refused upload leaves nothing in the bucket either.
        s3: Any = s3_settings.boto3_client()
        before = s3.list_objects_v2(Bucket=s3_settings.bucket, Prefix=f"images/{alice.id}/")
        r = await upload(alice.http, (FIXTURES / "truncated_jpeg.jpg").read_bytes())
        assert r.status_code == 400
        after = s3.list_objects_v2(Bucket=s3_settings.bucket, Prefix=f"images/{alice.id}/")
        assert after.get("KeyCount") == before.get("KeyCount") == 1
        await alice.close()
