"""The web client: static files shipped in ``omninudge_server/web`` (no build step).

``/`` serves ``index.html``, ``/static/{name}`` the ES modules, CSS and icons, and
``/manifest.webmanifest`` the web app manifest. Every answer carries a strict
Content-Security-Policy (no inline script or style, everything from our own origin,
WebSockets only back to us) and the usual hardening headers. The directory is flat
on purpose: a name is one path segment of a fixed alphabet, so nothing outside it can
be reached (no ``..``, no sub-directories).

``GET /api/users/{user_id}`` is here too: the client shows names, and a conversation
lists only participant ids.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core import codec, wire
from omninudge_core.errors import NotFound
from omninudge_server.handlers import authenticate, json_response, services_of
from omninudge_server.routes_users import check_id

__all__ = ["WEB_DIR", "content_security_policy", "routes"]

WEB_DIR = Path(__file__).with_name("web")

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
}


def content_security_policy(host: str) -> str:
    """The page's CSP. ``connect-src`` names our own host for ws:/wss: explicitly
    because browsers before CSP3 do not let ``'self'`` cover WebSockets."""
    sockets = f" ws://{host} wss://{host}" if host and re.fullmatch(r"[\w.:\[\]-]+", host) else ""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # Media comes from our signed URLs or an S3 presigned host; Reddit thumbnails
            # come from Reddit's CDN: images and video may be https from anywhere.
            "img-src 'self' data: blob: https:",
            "media-src 'self' blob: https:",
            f"connect-src 'self'{sockets}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "manifest-src 'self'",
        ]
    )


def _headers(request: Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(request.headers.get("host", "")),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


def _file(request: Request, name: str, *, cache: str) -> Response:
    suffix = Path(name).suffix
    path = WEB_DIR / name
    if not _NAME.fullmatch(name) or suffix not in _TYPES or not path.is_file():
        raise NotFound("no such file")
    headers = _headers(request)
    headers["Cache-Control"] = cache
    return Response(path.read_bytes(), media_type=_TYPES[suffix], headers=headers)


async def index(request: Request) -> Response:
    # no-cache: a new release is picked up at once (the modules are revalidated too).
    return _file(request, "index.html", cache="no-cache")


async def manifest(request: Request) -> Response:
    return _file(request, "manifest.webmanifest", cache="no-cache")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name in ("index.html", "manifest.webmanifest"):
        raise NotFound("no such file")
    return _file(request, name, cache="no-cache")


async def user_by_id(request: Request) -> Response:
    """``GET /api/users/{user_id}``: ``{id, username, on_platform}`` (404 unknown)."""
    services = services_of(request)
    await authenticate(request)
    user = await services.storage.users.get(check_id(request.path_params["user_id"], "user_id"))
    return json_response(
        codec.unstructure(wire.UserLookup.from_domain(user, username=user.username))
    )


routes = [
    Route("/", index, methods=["GET"]),
    Route("/manifest.webmanifest", manifest, methods=["GET"]),
    Route("/static/{name}", static, methods=["GET"]),
    Route("/api/users/{user_id}", user_by_id, methods=["GET"]),
]
