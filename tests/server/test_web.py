"""The web client's static files: served with a strict CSP, nothing outside the folder."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import RunningServer


async def test_the_page_is_served_with_a_strict_content_security_policy(
    server: RunningServer,
) -> None:
    async with server.client() as http:
        r = await http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    host = server.base_url.removeprefix("http://")
    assert f"connect-src 'self' ws://{host} wss://{host}" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    # No inline script or style in the page itself: the CSP would block it.
    for inline in ("<script>", "<style", " style=", " onclick="):
        assert inline not in r.text
    assert '<script type="module" src="/static/app.js"></script>' in r.text


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/crypto.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/icon.svg", "image/svg+xml"),
        ("/static/icon-192.png", "image/png"),
        ("/manifest.webmanifest", "application/manifest+json"),
    ],
)
async def test_static_files_have_their_types_and_the_same_headers(
    server: RunningServer, path: str, content_type: str
) -> None:
    async with server.client() as http:
        r = await http.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(content_type)
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_the_manifest_names_the_app_and_its_icons(server: RunningServer) -> None:
    async with server.client() as http:
        manifest = (await http.get("/manifest.webmanifest")).json()
        assert manifest["start_url"] == "/"
        for icon in manifest["icons"]:
            assert (await http.get(icon["src"])).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/..%2Fweb.py",
        "/static/%2e%2e%2fconfig.py",
        "/static/.hidden.js",
        "/static/app.py",
        "/static/index.html",
        "/static/APP.JS",
    ],
)
async def test_nothing_outside_the_web_folder_is_served(server: RunningServer, path: str) -> None:
    async with server.client() as http:
        r = await http.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_a_user_name_is_found_by_id_for_the_signed_in_only(people: Any) -> None:
    alice = await people()
    bob = await people()
    r = await alice.http.get(f"/api/users/{bob.id}")
    assert r.status_code == 200
    assert r.json() == {"id": bob.id, "username": bob.username, "on_platform": True}
    assert (await alice.http.get("/api/users/no-such-user")).status_code == 404
    assert (await alice.http.get("/api/users/bad%20id")).status_code == 400
    async with alice.running.client() as anonymous:
        assert (await anonymous.get(f"/api/users/{bob.id}")).status_code == 401
