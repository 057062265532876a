"""The send path, shared by REST and the WebSocket (acks and reads: ``receipts``).

Durability (DESIGN.md): a message is acknowledged to its sender (201 / ``sent``)
only after ``MessageStore.append`` returned, and that append writes the message,
its delivery rows and a MESSAGE event in the stream of the recipient AND of the
sender in one transaction. Only then is the new stream head announced through
fan-out, which is best effort: a lost notice is recovered by resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import attrs

from omninudge_core import delivery
from omninudge_core.errors import (
    DeviceMismatch,
    Forbidden,
    InvalidFrame,
    NotFound,
    OmniNudgeError,
    RateLimited,
)
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Envelope,
    Message,
    Origin,
)
from omninudge_core.policies import blocking
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = [
    "SendOutcome",
    "block_relation",
    "known_conversation",
    "load_conversation",
    "send_message",
    "side_by_side",
    "unwrap",
    "viewer_status",
]

logger = logging.getLogger("omninudge.messaging")

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


@attrs.frozen
class SendOutcome:
    message: Message
    created: bool
    relay_error: OmniNudgeError | None = None  # a failed relay to a Reddit-only recipient


async def load_conversation(services: Services, conversation_id: str, user_id: str) -> Conversation:
    """The conversation, if ``user_id`` takes part in it. Raises NotFound otherwise
    (an outsider cannot even learn that it exists)."""
    try:
        conversation = await services.storage.conversations.get(conversation_id)
    except NotFound:
        raise NotFound("no such conversation") from None
    if not conversation.has(user_id):
        raise NotFound("no such conversation")
    return conversation


async def known_conversation(
    services: Services, conversation_id: str, user_id: str
) -> Conversation:
    """Like ``load_conversation``, but a PLATFORM conversation comes from the process's
    cache (``wiring.KnownConversations``) after its first read: use only its ``id``,
    ``participants`` and ``kind``. Raises NotFound."""
    conversation = services.known_conversations.get(conversation_id)
    if conversation is None:
        conversation = await load_conversation(services, conversation_id, user_id)
        services.known_conversations.add(conversation)
    elif not conversation.has(user_id):
        raise NotFound("no such conversation")
    return conversation


async def block_relation(services: Services, a: str, b: str) -> frozenset[tuple[str, str]]:
    # The store answers "either direction"; the policy only needs one pair to decide.
    return frozenset({(a, b)}) if await services.storage.blocks.between(a, b) else frozenset()


async def send_message(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    *,
    sender_id: str,
    conversation_id: str,
    client_msg_id: str,
    envelope: Envelope | None,
    text: str | None,
) -> SendOutcome:
    """Validate, commit, announce. Raises NotFound, Blocked, Forbidden, InvalidFrame,
    DeviceMismatch, RateLimited, Unavailable.

    A PLATFORM send costs two reads, made at once (the block relation and the devices
    of both users: neither is cached, so a block or a device registered a moment ago,
    by any process, counts), and the append."""
    now = services.clock()
    verdict = await services.rate_limiter.hit(
        f"send:{sender_id}",
        rate_per_s=services.settings.send_rate_per_s,
        burst=services.settings.send_burst,
    )
    if not verdict.allowed:
        raise RateLimited(
            "too many messages", retry_at=now + timedelta(seconds=verdict.retry_after_s)
        )
    conversation = await known_conversation(services, conversation_id, sender_id)
    recipient_id = conversation.other(sender_id)
    if conversation.kind is ConversationKind.PLATFORM and envelope is not None:
        # The reads the checks below need, queued at once: one wait instead of two.
        # Each result (or error) is used where the sequential code used it, so the
        # checks and the error a client sees keep their order.
        relation_r, devices_r = await side_by_side(
            block_relation(services, sender_id, recipient_id),
            services.storage.devices.for_users([sender_id, recipient_id]),
        )
        prefetched = True
    else:
        relation_r = await block_relation(services, sender_id, recipient_id)
        prefetched = False
    blocking.ensure_may_message(unwrap(relation_r), sender_id, recipient_id)
    if conversation.kind is not ConversationKind.PLATFORM:
        recipient = await services.storage.users.get(recipient_id)
        if not recipient.on_platform:
            from omninudge_server.relay import relay_message

            return await relay_message(
                services,
                hub,
                metrics,
                conversation=conversation,
                sender_id=sender_id,
                recipient=recipient,
                client_msg_id=client_msg_id,
                envelope=envelope,
                text=text,
            )
    if envelope is None:
        raise InvalidFrame(
            "a platform recipient needs an end-to-end encrypted envelope",
            code="missing_field",
            field="envelope",
        )
    devices = (
        unwrap(devices_r)
        if prefetched
        else await services.storage.devices.for_users([sender_id, recipient_id])
    )
    sender_devices = {d.device_id for d in devices.get(sender_id, [])}
    recipient_devices = [d.device_id for d in devices.get(recipient_id, [])]
    if envelope.sender_device not in sender_devices:
        raise Forbidden("sender_device is not one of your devices", code="invalid_sender_device")
    expected = sender_devices | set(recipient_devices)
    covered = envelope.devices()
    if covered != expected:
        raise DeviceMismatch(missing=list(expected - covered), stale=list(covered - expected))

    message = Message(
        id=services.new_id(),
        conversation_id=conversation.id,
        sender_id=sender_id,
        client_msg_id=client_msg_id,
        origin=Origin.PLATFORM,
        sent_at=now,
        envelope=envelope,
        text=None,
    )
    # The recipient's read-receipt setting is not read: the effects of ``accept`` do not
    # depend on it (the state it returns is dropped; an ack or a read rebuilds it from
    # the rows with the setting current then). tests/server/test_messaging_batches.py.
    accepted = delivery.accept(
        message_id=message.id,
        conversation_id=conversation.id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        device_ids=recipient_devices,
        reddit_only=False,
        now=now,
    )
    records = tuple(
        record
        for effect in accepted.effects
        if isinstance(effect, delivery.PersistDeliveries)
        for record in effect.records
    )
    # PushToDevice effects are carried out by the stream: each device's connection
    # pushes the MESSAGE event when the fan-out notice (or a resume) reaches it.
    appended = await services.storage.messages.append(
        message, records, notify=[recipient_id, sender_id]
    )
    if appended.created:
        metrics.messages_sent.labels(origin=message.origin.value).inc()
        await hub.announce(appended.events)
    elif appended.message.conversation_id != conversation.id:
        raise InvalidFrame(
            "client_msg_id was already used in another conversation",
            code="invalid_field",
            field="client_msg_id",
        )
    return SendOutcome(appended.message, appended.created)


async def side_by_side(
    first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]
) -> tuple[A | BaseException, B | BaseException]:
    """Run both at once; each result or its error, as ``asyncio.gather(...,
    return_exceptions=True)`` gives them, but with one task instead of two (it runs
    for every message)."""
    task = asyncio.ensure_future(first)
    second_r: B | BaseException
    try:
        second_r = await second
    except Exception as exc:
        second_r = exc
    except BaseException:
        task.cancel()
        raise
    first_r: A | BaseException
    try:
        first_r = await task
    except Exception as exc:
        first_r = exc
    return first_r, second_r


def unwrap(result: T | BaseException) -> T:
    """The value of a ``side_by_side``/``gather(return_exceptions=True)`` result; raises
    the error it holds."""
    if isinstance(result, BaseException):
        raise result
    return result


def viewer_status(
    message: Message, viewer_id: str, records: Sequence[DeliveryRecord] | None
) -> DeliveryStatus:
    """The status shown to ``viewer_id``: the sender sees the recipient's progress,
    the recipient sees ``delivered`` (they have it)."""
    if message.sender_id != viewer_id:
        return DeliveryStatus.DELIVERED
    statuses = [r.status for r in records or ()]
    return max(statuses, key=delivery.RANK.__getitem__, default=DeliveryStatus.ACCEPTED)
