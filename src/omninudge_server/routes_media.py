"""Media routes (API.md "Media"): upload, fresh signed URLs, and the local blob server.

- ``POST /api/media``: multipart ``file``, streamed (``uploads``), processed and stored
  (``media.store_upload``); 201 with the media and signed URLs. Per-user rate limit.
- ``GET /api/media/{media_id}``: fresh signed URLs, for the uploader and the
  participants of a conversation the media was shared in (404 for anyone else, so
  an outsider cannot even learn that it exists).
- ``PUT /api/media/{media_id}/shares/{conversation_id}``: the uploader shares a media
  with a conversation they take part in (idempotent, 204), so the other participant can
  get its URLs - e.g. a picture sent in an encrypted message, which the server cannot read.
- ``GET /media/{prefix}/{folder}/{name}?exp&sig``: the bytes, for the local-directory
  store only (S3 serves its own presigned URLs). Every blob key has exactly three
  segments (``policies.keys``). A bad or expired signature is 403.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from omninudge_core.errors import Blocked, Forbidden, NotFound, PayloadTooLarge, RateLimited
from omninudge_server.errors import error_response
from omninudge_server.handlers import authenticate, json_response, services_of
from omninudge_server.media import (
    backends_of,
    media_limits,
    media_view,
    store_upload,
    thumbnail_status,
)
from omninudge_server.messaging import load_conversation
from omninudge_server.metrics import Metrics
from omninudge_server.routes_users import check_id
from omninudge_server.uploads import check_declared_length, spooled_upload

__all__ = ["routes"]


async def upload_media(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    settings = services.settings
    verdict = await services.rate_limiter.hit(
        f"upload:{principal.user_id}",
        rate_per_s=settings.upload_rate_per_s,
        burst=settings.upload_burst,
    )
    if not verdict.allowed:
        raise RateLimited(
            "too many uploads",
            retry_at=services.clock() + timedelta(seconds=verdict.retry_after_s),
        )
    backends_of(services)  # 503 before reading a byte when media is not configured
    limits = media_limits(settings)
    try:
        check_declared_length(request, limits)
    except PayloadTooLarge as exc:
        # Announced too big: answer from the headers and close rather than receive it.
        # (A refusal found while reading keeps the connection: the server drains the
        # rest without looking at it, and every client gets to read the answer.)
        metrics: Metrics = request.app.state.metrics
        metrics.errors.labels(code=exc.code).inc()
        response = error_response(exc, now=services.clock())
        response.headers["Connection"] = "close"
        return response
    async with spooled_upload(
        request, limits=limits, directory=settings.data_dir / "tmp"
    ) as upload:
        stored = await store_upload(services, principal.user_id, upload)
    body = await media_view(services, stored.media, status=stored.thumbnail_status)
    return json_response(body, status_code=201)


async def get_media(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    media_id = check_id(request.path_params["media_id"], "media_id")
    store = services.storage.media
    if not await store.can_access(media_id, principal.user_id):
        raise NotFound("no such media")
    try:
        media = await store.get(media_id)
    except NotFound:
        raise NotFound("no such media") from None
    return json_response(
        await media_view(services, media, status=thumbnail_status(services, media))
    )


async def share_media(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    media_id = check_id(request.path_params["media_id"], "media_id")
    conversation_id = check_id(request.path_params["conversation_id"], "conversation_id")
    try:
        media = await services.storage.media.get(media_id)
    except NotFound:
        raise NotFound("no such media") from None
    if media.owner_id != principal.user_id:
        raise NotFound("no such media")  # only the uploader shares; others learn nothing
    conversation = await load_conversation(services, conversation_id, principal.user_id)
    if await services.storage.blocks.between(*conversation.participants):
        raise Blocked("a block between you forbids sharing")
    await services.storage.media.share(media_id, conversation.id)
    return Response(status_code=204)


async def serve_blob(request: Request) -> Response:
    services = services_of(request)
    local = backends_of(services).local
    if local is None:
        raise NotFound("media is served by the S3 store, not by this server")
    params = request.path_params
    key = f"{params['prefix']}/{params['folder']}/{params['name']}"
    exp = request.query_params.get("exp", "")
    sig = request.query_params.get("sig", "")
    if not local.verify(key, exp, sig):
        raise Forbidden("the link is invalid or has expired", code="invalid_signature")
    blob = await local.open_stream(key)
    # exp is an integer now (verify accepted it): cache until the link expires at most.
    max_age = max(0, int(exp) - int(services.clock().timestamp()))
    headers = {
        "Content-Length": str(blob.size),
        "Cache-Control": f"private, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
        # A stored file is never a document: no script, no plugin, no framing.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    return StreamingResponse(blob, media_type=blob.content_type, headers=headers)


routes = [
    Route("/api/media", upload_media, methods=["POST"]),
    Route("/api/media/{media_id}", get_media, methods=["GET"]),
    Route("/api/media/{media_id}/shares/{conversation_id}", share_media, methods=["PUT"]),
    Route("/media/{prefix}/{folder}/{name}", serve_blob, methods=["GET"]),
]
