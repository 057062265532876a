"""``GET /invite/{token}``: the invitation landing page (API.md "Reddit").

A Reddit-only person receives this link in the first message relayed to them. The
page says who invited them and links to Reddit login with ``return_to`` set to the
conversation; the login itself (``reddit_auth``) upgrades their account and starts the
history import. Plain HTML, no script, escaped content, a strict CSP.
"""

from __future__ import annotations

import html
import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from omninudge_core.errors import NotFound
from omninudge_server.handlers import services_of
from omninudge_server.reddit_auth import login_url

__all__ = ["routes"]

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


async def invitation(request: Request) -> Response:
    services = services_of(request)
    token = request.path_params["token"]
    invitation = None
    if _TOKEN.match(token) and services.reddit is not None:
        try:
            invitation = await services.storage.invitations.get(token)
        except NotFound:
            invitation = None
    if invitation is None:
        return _page(
            "Invitation not found",
            "<h1>Invitation not found</h1><p>This invitation link is not valid on this server.</p>",
            status=404,
        )
    inviter = await services.storage.users.get(invitation.inviter_id)
    target = login_url(f"/?conversation={invitation.conversation_id}")
    name = html.escape(inviter.username)
    you = html.escape(invitation.reddit_username)
    return _page(
        f"u/{inviter.username} invited you to OmniNudge",
        f"<h1>u/{name} invited you to OmniNudge</h1>"
        f"<p>Hi u/{you}. OmniNudge is private, end-to-end encrypted messaging for Reddit "
        f"users. Log in with your Reddit account to continue the conversation with u/{name}; "
        "your recent Reddit messages with them come along.</p>"
        f'<p><a href="{html.escape(target)}">Log in with Reddit</a></p>',
    )


routes = [Route("/invite/{token}", invitation, methods=["GET"])]
