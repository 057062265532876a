"""Users, devices and blocks (API.md "Users, devices, blocks")."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core import codec, wire
from omninudge_core.errors import Conflict, Forbidden, InvalidFrame
from omninudge_core.models import Block, Device
from omninudge_server.handlers import authenticate, json_response, read_body, services_of

__all__ = ["check_id", "routes"]

# Reddit's username rule (REDDIT.md); ids are ours or the client's, opaque but bounded.
_USERNAME = re.compile(r"[A-Za-z0-9_-]{3,20}")
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def check_id(value: str, field: str) -> str:
    """A path id: 1..128 characters of ``[A-Za-z0-9_.:-]``. Raises InvalidFrame."""
    if not _ID.fullmatch(value):
        raise InvalidFrame(f"{field} is not a valid id", code="invalid_field", field=field)
    return value


async def user_by_name(request: Request) -> Response:
    services = services_of(request)
    await authenticate(request)
    username = request.path_params["username"]
    if not _USERNAME.fullmatch(username):
        raise InvalidFrame("not a Reddit username", code="invalid_field", field="username")
    user = await services.storage.users.by_username(username)
    return json_response(codec.unstructure(wire.UserLookup.from_domain(user, username=username)))


async def put_device(request: Request) -> Response:
    """Register a device (201), or the same keys again (200). Changing keys is refused
    (409); someone else's device id is forbidden (403)."""
    services = services_of(request)
    principal = await authenticate(request)
    device_id = check_id(request.path_params["device_id"], "device_id")
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.DevicePutBody
    )
    device = Device(
        user_id=principal.user_id,
        device_id=device_id,
        public_key=body.public_key.to_mapping(),
        signing_key=body.signing_key.to_mapping(),
        name=body.name,
        created_at=services.clock(),
    )
    try:
        stored, created = await services.storage.devices.put(device)
    except Conflict as exc:
        mine = await services.storage.devices.for_user(principal.user_id)
        if any(d.device_id == device_id for d in mine):
            raise Conflict(
                "a device's keys cannot change: register a new device instead",
                code="device_keys_changed",
            ) from exc
        raise Forbidden("this device id belongs to someone else") from exc
    return json_response(
        codec.unstructure(wire.WireDevice.from_domain(stored)), status_code=201 if created else 200
    )


async def delete_device(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    device_id = check_id(request.path_params["device_id"], "device_id")
    await services.storage.devices.delete(principal.user_id, device_id)
    return Response(status_code=204)


async def user_devices(request: Request) -> Response:
    """A user's current devices and public keys (what a sender encrypts to)."""
    services = services_of(request)
    await authenticate(request)
    user_id = check_id(request.path_params["user_id"], "user_id")
    await services.storage.users.get(user_id)  # 404 for an unknown user
    devices = await services.storage.devices.for_user(user_id)
    return json_response([codec.unstructure(wire.WireDevice.from_domain(d)) for d in devices])


async def put_block(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    user_id = check_id(request.path_params["user_id"], "user_id")
    if user_id == principal.user_id:
        raise InvalidFrame("you cannot block yourself", code="invalid_field", field="user_id")
    await services.storage.users.get(user_id)
    await services.storage.blocks.put(Block(principal.user_id, user_id, services.clock()))
    await request.app.state.slideshows.end_for_block(principal.user_id, user_id)
    return Response(status_code=204)


async def delete_block(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    user_id = check_id(request.path_params["user_id"], "user_id")
    await services.storage.blocks.delete(principal.user_id, user_id)
    return Response(status_code=204)


async def list_blocks(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    blocks = await services.storage.blocks.blocked_by(principal.user_id)
    return json_response(
        {
            "blocks": [
                {"user_id": b.blocked_id, "created_at": codec.unstructure(b.created_at)}
                for b in blocks
            ]
        }
    )


routes = [
    Route("/api/users/by-name/{username}", user_by_name, methods=["GET"]),
    Route("/api/users/{user_id}/devices", user_devices, methods=["GET"]),
    Route("/api/devices/{device_id}", put_device, methods=["PUT"]),
    Route("/api/devices/{device_id}", delete_device, methods=["DELETE"]),
    Route("/api/blocks", list_blocks, methods=["GET"]),
    Route("/api/blocks/{user_id}", put_block, methods=["PUT"]),
    Route("/api/blocks/{user_id}", delete_block, methods=["DELETE"]),
]
