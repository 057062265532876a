"""``/ws``: the WebSocket endpoint, a thin shell around ``omninudge_core.session``.

One ``WsConnection`` per socket. Everything that can change the session (client
frames, fan-out notices, the timer, the socket closing) goes through ONE queue and
ONE loop, which feeds the core machine and performs the effects it returns, in order:
no two coroutines ever write to the socket or touch the session at once.

- Frames are decoded by the core codec. A malformed or unknown frame gets an
  ``error`` frame and the connection stays open; the session's frame budget closes
  a flooding client (1008); an oversize frame (> ``ws_max_frame_bytes``) is closed
  by the WebSocket layer (1009).
- Heartbeat: the transport (uvicorn, ``ws_ping_interval``/``ws_ping_timeout``) sends
  the protocol pings and drops a peer that stops answering, because ASGI gives the
  app no access to ping/pong control frames. The session's ``SendPing`` therefore
  only refreshes presence and is answered at once with ``PongReceived``.
- ``?device_id=`` (optional) names the device of this connection, so that acks mark
  messages delivered to that device; ``?resume_from=`` is used with cookie auth.
"""

from __future__ import annotations

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from omninudge_core import codec
from omninudge_core.errors import AuthenticationFailed, InvalidFrame, OmniNudgeError
from omninudge_server.auth import Principal, check_origin, token_from_connection
from omninudge_server.errors import ws_error_frame
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services
from omninudge_server.ws_connection import WsConnection
from omninudge_server.ws_json import dumps

__all__ = ["routes", "websocket_endpoint"]


def _query_int(websocket: WebSocket, name: str) -> int | None:
    raw = websocket.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidFrame(
            f"{name} must be a non-negative integer", code="invalid_field", field=name
        )
    return int(raw)


async def _cookie_principal(websocket: WebSocket, services: Services) -> Principal | None:
    """The session cookie authenticates the upgrade when it is valid and the Origin is
    ours (cross-site WebSocket hijacking). A bad cookie is ignored: the client may
    still send an ``auth`` frame."""
    try:
        found = token_from_connection(websocket)
    except AuthenticationFailed:
        return None
    if found is None or not found[1]:
        return None
    try:
        check_origin(websocket, services.settings.public_url, method="POST")
        principal = services.tokens.verify(found[0], via_cookie=True)
        if await services.revocations.is_revoked(principal.jti):
            return None
    except OmniNudgeError:
        return None
    return principal


async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    hub: Hub = websocket.app.state.hub
    metrics: Metrics = websocket.app.state.metrics
    await websocket.accept()
    connection = WsConnection(websocket, services, hub, metrics)
    try:
        device_id = websocket.query_params.get("device_id")
        if device_id is not None and not 0 < len(device_id) <= codec.MAX_ID_CHARS:
            raise InvalidFrame("device_id is not valid", code="invalid_field", field="device_id")
        connection.device_id = device_id
        resume_from = _query_int(websocket, "resume_from")
    except InvalidFrame as exc:
        await websocket.send_text(dumps(ws_error_frame(exc)))
        await websocket.close(1008, "bad query parameters")
        return
    principal = await _cookie_principal(websocket, services)
    await connection.run(cookie_principal=principal, resume_from=resume_from)


routes = [WebSocketRoute("/ws", websocket_endpoint)]
