"""Conversations, messages, read marks and the long-poll event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core import codec, wire
from omninudge_core.errors import InvalidFrame, Unavailable
from omninudge_core.models import Conversation, ConversationKind, User
from omninudge_server import messaging, receipts
from omninudge_server.errors import error_body
from omninudge_server.frames import frame_for_event
from omninudge_server.handlers import (
    authenticate,
    json_response,
    read_body,
    services_of,
)
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.routes_users import check_id

__all__ = ["routes"]

EVENTS_PAGE = 100


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def create_conversation(request: Request) -> Response:
    """The one conversation of the pair (idempotent): 201 when created, else 200."""
    services = services_of(request)
    principal = await authenticate(request)
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.CreateConversationBody
    )
    users = services.storage.users
    other: User | None
    if body.user_id is not None:
        other = await users.get(check_id(body.user_id, "user_id"))
    else:
        assert body.reddit_username is not None
        other = await users.by_username(body.reddit_username)
        if other is None or not other.on_platform:
            from omninudge_server.relay import open_reddit_conversation

            caller = await users.get(principal.user_id)
            reddit_conversation, created = await open_reddit_conversation(
                services, caller, body.reddit_username
            )
            return json_response(
                codec.unstructure(wire.WireConversation.from_domain(reddit_conversation)),
                status_code=201 if created else 200,
            )
    if other.id == principal.user_id:
        raise InvalidFrame(
            "you cannot start a conversation with yourself", code="invalid_field", field="user_id"
        )
    if not other.on_platform:
        raise Unavailable(
            "reaching a Reddit-only person needs Reddit, which is not configured",
            code="reddit_unavailable",
        )
    conversation, created = await services.storage.conversations.get_or_create(
        Conversation(
            id=services.new_id(),
            participants=(principal.user_id, other.id),
            kind=ConversationKind.PLATFORM,
            created_at=services.clock(),
        )
    )
    return json_response(
        codec.unstructure(wire.WireConversation.from_domain(conversation)),
        status_code=201 if created else 200,
    )


async def list_conversations(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    query = codec.decode_page_query(request.query_params)
    page = await services.storage.conversations.list_for_user(
        principal.user_id, before=query.before, limit=query.limit
    )
    return json_response(codec.unstructure(wire.ConversationsPage.from_page(page)))


async def history(request: Request) -> Response:
    """Newest first, keyset. The sender's own messages show the recipient's progress."""
    services = services_of(request)
    principal = await authenticate(request)
    conversation_id = check_id(request.path_params["conversation_id"], "conversation_id")
    await messaging.load_conversation(services, conversation_id, principal.user_id)
    query = codec.decode_page_query(request.query_params)
    page = await services.storage.messages.history(
        conversation_id, before=query.before, limit=query.limit
    )
    items = []
    for message in page.items:
        records = (
            await services.storage.messages.deliveries(message.id)
            if message.sender_id == principal.user_id
            else None
        )
        status = messaging.viewer_status(message, principal.user_id, records)
        items.append(wire.WireMessage.from_domain(message, status=status))
    answer = wire.MessagesPage(messages=tuple(items), next_cursor=page.next_cursor)
    return json_response(codec.unstructure(answer))


async def post_message(request: Request) -> Response:
    """201 ``{message}`` for a new message, 200 with the original for a replayed
    ``client_msg_id``."""
    services = services_of(request)
    principal = await authenticate(request)
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.PostMessageBody
    )
    outcome = await messaging.send_message(
        services,
        _hub(request),
        _metrics(request),
        sender_id=principal.user_id,
        conversation_id=body.conversation_id,
        client_msg_id=body.client_msg_id,
        envelope=body.envelope,
        text=body.text,
    )
    records = await services.storage.messages.deliveries(outcome.message.id)
    status = messaging.viewer_status(outcome.message, principal.user_id, records)
    answer = wire.MessageAnswer(wire.WireMessage.from_domain(outcome.message, status=status))
    content = codec.unstructure(answer)
    if outcome.relay_error is not None:
        # The message is committed; Reddit refused to carry it (docs/reddit.md).
        failure = outcome.relay_error
        content["relay_error"] = error_body(failure.code, failure.message, **failure.details())[
            "error"
        ]
    return json_response(content, status_code=201 if outcome.created else 200)


async def read(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    conversation_id = check_id(request.path_params["conversation_id"], "conversation_id")
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.ReadBody
    )
    await receipts.mark_read(
        services,
        _hub(request),
        _metrics(request),
        user_id=principal.user_id,
        conversation_id=conversation_id,
        up_to=body.up_to,
    )
    return Response(status_code=204)


async def _implicit_ack(request: Request, user_id: str, since: int) -> None:
    """A long-poll client that asks for events after ``since`` has processed the page
    before it: those messages are delivered (to ``?device_id=`` when given). Acks are
    idempotent in the delivery machine, so a page acked twice changes nothing."""
    services = services_of(request)
    device_id = request.query_params.get("device_id") or None
    if device_id is not None and len(device_id) > codec.MAX_ID_CHARS:
        raise InvalidFrame("device_id is too long", code="invalid_field", field="device_id")
    after = max(0, since - EVENTS_PAGE)
    acked = await services.storage.events.read(user_id, after=after, limit=since - after)
    await receipts.record_device_ack(
        services,
        _hub(request),
        _metrics(request),
        user_id=user_id,
        device_id=device_id,
        events=[e for e in acked if e.seq <= since],
    )


class _Wakeup:
    """A long-poll waiter: set when the user's stream grows."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def on_notice(self, notice: Mapping[str, Any]) -> None:
        if notice.get("k") in ("events", "shutdown"):  # shutdown: answer now, don't hold it
            self.event.set()


async def events(request: Request) -> Response:
    """``GET /api/events?since=<seq>&timeout=<s <= 30>``: the long-poll fallback."""
    services = services_of(request)
    principal = await authenticate(request)
    query = codec.decode_events_query(request.query_params)
    since, timeout = query.since, min(query.timeout, int(services.settings.events_max_timeout_s))
    store = services.storage.events
    hub = _hub(request)
    if since > 0:
        await _implicit_ack(request, principal.user_id, since)
    found = await store.read(principal.user_id, after=since, limit=EVENTS_PAGE)
    if not found and timeout > 0:
        waiter = _Wakeup()
        await hub.attach(principal.user_id, waiter)
        try:
            # Read again after subscribing: an append between the two reads is not lost.
            found = await store.read(principal.user_id, after=since, limit=EVENTS_PAGE)
            if not found:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), timeout)
                found = await store.read(principal.user_id, after=since, limit=EVENTS_PAGE)
        finally:
            await hub.detach(principal.user_id, waiter)
    frames = [frame for frame in (frame_for_event(e) for e in found) if frame is not None]
    next_seq = found[-1].seq if found else since
    answer = wire.EventsPage(events=tuple(frames), next=next_seq)
    return json_response(codec.unstructure(answer))


routes = [
    Route("/api/conversations", create_conversation, methods=["POST"]),
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/conversations/{conversation_id}/messages", history, methods=["GET"]),
    Route("/api/conversations/{conversation_id}/read", read, methods=["POST"]),
    Route("/api/messages", post_message, methods=["POST"]),
    Route("/api/events", events, methods=["GET"]),
]
