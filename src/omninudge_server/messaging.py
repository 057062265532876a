"""The send, ack and read paths, shared by REST and the WebSocket.

Durability (DESIGN.md): a message is acknowledged to its sender (201 / ``sent``)
only after ``MessageStore.append`` returned, and that append writes the message,
its delivery rows and a MESSAGE event in the stream of the recipient AND of the
sender in one transaction. Only then is the new stream head announced through
fan-out, which is best effort: a lost notice is recovered by resume.

Delivery decisions (which receipt, when) belong to ``omninudge_core.delivery``;
this module loads its state from the delivery rows, feeds it what happened and
performs the effects: persist rows, append a ``receipt`` event to the SENDER's
stream, announce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TypeVar

import attrs

from omninudge_core import codec, delivery, wire
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
    EventKind,
    Message,
    Origin,
    StreamEvent,
)
from omninudge_core.policies import blocking
from omninudge_core.ports import NewEvent
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = [
    "SendOutcome",
    "load_conversation",
    "mark_read",
    "record_device_ack",
    "send_message",
    "viewer_status",
]

logger = logging.getLogger("omninudge.messaging")

T = TypeVar("T")


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


async def _block_relation(services: Services, a: str, b: str) -> frozenset[tuple[str, str]]:
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
    conversation: Conversation | None = None,
) -> SendOutcome:
    """Validate, commit, announce. Raises NotFound, Blocked, Forbidden, InvalidFrame,
    DeviceMismatch, RateLimited, Unavailable. ``conversation``: the caller's copy of a
    PLATFORM conversation the sender takes part in (its participants and kind never
    change), which spares the read."""
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
    if (
        conversation is None
        or conversation.id != conversation_id
        or conversation.kind is not ConversationKind.PLATFORM
        or not conversation.has(sender_id)
    ):
        conversation = await load_conversation(services, conversation_id, sender_id)
    recipient_id = conversation.other(sender_id)
    if conversation.kind is ConversationKind.PLATFORM and envelope is not None:
        # The reads the checks below need, queued at once: one wait instead of three.
        # Each result (or error) is used where the sequential code used it, so the
        # checks and the error a client sees keep their order.
        relation_r, devices_r, recipient_r = await asyncio.gather(
            _block_relation(services, sender_id, recipient_id),
            services.storage.devices.for_users([sender_id, recipient_id]),
            services.storage.users.get(recipient_id),
            return_exceptions=True,
        )
        prefetched = True
    else:
        relation_r = await _block_relation(services, sender_id, recipient_id)
        prefetched = False
    blocking.ensure_may_message(_ok(relation_r), sender_id, recipient_id)
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
        _ok(devices_r)
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

    recipient = _ok(recipient_r) if prefetched else await services.storage.users.get(recipient_id)
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
    accepted = delivery.accept(
        message_id=message.id,
        conversation_id=conversation.id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        device_ids=recipient_devices,
        reddit_only=False,
        now=now,
        read_receipts_enabled=recipient.settings.read_receipts,
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
        await _announce(hub, appended.events)
    elif appended.message.conversation_id != conversation.id:
        raise InvalidFrame(
            "client_msg_id was already used in another conversation",
            code="invalid_field",
            field="client_msg_id",
        )
    return SendOutcome(appended.message, appended.created)


def _ok(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result


async def _announce(hub: Hub, events: Sequence[StreamEvent]) -> None:
    hub.remember(events)  # the connections push these without reading them back
    heads: dict[str, int] = {}
    for event in events:
        heads[event.user_id] = max(heads.get(event.user_id, 0), event.seq)
    for user_id, seq in heads.items():
        await hub.notify_events(user_id, seq)


async def _delivery_state_lookup(
    services: Services,
    message: Message,
    lookups: dict[str, tuple[str, bool, bool]] | None,
) -> tuple[str, bool, bool]:
    conversation = await services.storage.conversations.get(message.conversation_id)
    recipient_id = conversation.other(message.sender_id)
    recipient = await services.storage.users.get(recipient_id)
    found = (
        recipient_id,
        conversation.kind is ConversationKind.REDDIT,
        recipient.settings.read_receipts,
    )
    if lookups is not None:
        lookups[message.conversation_id] = found
    return found


async def _delivery_state(
    services: Services,
    message: Message,
    lookups: dict[str, tuple[str, bool, bool]] | None = None,
) -> delivery.RecipientDelivery:
    # ``lookups`` (conversation id -> recipient, reddit-only, read receipts) spares an
    # ack batch, which is mostly one conversation, the same two reads per message.
    found = lookups.get(message.conversation_id) if lookups is not None else None
    if found is None:
        found = await _delivery_state_lookup(services, message, lookups)
    recipient_id, reddit_only, read_receipts = found
    records = await services.storage.messages.deliveries(message.id)
    return delivery.RecipientDelivery.from_records(
        message_id=message.id,
        conversation_id=message.conversation_id,
        sender_id=message.sender_id,
        recipient_id=recipient_id,
        records=records,
        reddit_only=reddit_only,
        read_receipts_enabled=read_receipts,
    )


async def _delivery_states(
    services: Services,
    messages: Sequence[Message],
    lookups: dict[str, tuple[str, bool, bool]],
) -> list[delivery.RecipientDelivery]:
    """The delivery state of each message, in order. The per-conversation lookups come
    first (one per conversation); the delivery rows are then read all at once, so a
    batch waits for the store once rather than once per message."""
    for message in messages:
        if message.conversation_id not in lookups:
            await _delivery_state_lookup(services, message, lookups)
    return list(await asyncio.gather(*(_delivery_state(services, m, lookups) for m in messages)))


async def _perform(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    work: Sequence[tuple[Message, Sequence[delivery.DeliveryEffect]]],
) -> None:
    """Carry out the effects of one or more messages with one write of delivery rows
    and one append of receipt events (an ack batch costs two writes, not 2 per message)."""
    now = services.clock()
    records: list[DeliveryRecord] = []
    receipts: list[NewEvent] = []
    blocked: dict[tuple[str, str], bool] = {}
    codec_ = codec.default_codec()
    for message, effects in work:
        for effect in effects:
            if isinstance(effect, delivery.PersistDeliveries):
                records.extend(effect.records)
            elif isinstance(effect, delivery.SendReceipt):
                if effect.status is DeliveryStatus.READ:
                    pair = (effect.user_id, effect.to)
                    if pair not in blocked:
                        relation = await _block_relation(services, *pair)
                        blocked[pair] = blocking.blocked_between(relation, *pair)
                    # A receipt is a live signal: not across a block (policies.blocking).
                    if blocked[pair]:
                        continue
                elif effect.status is DeliveryStatus.DELIVERED:
                    metrics.delivery_latency.observe(
                        max(0.0, (now - message.sent_at).total_seconds())
                    )
                payload = codec_.event_payload(
                    wire.ReceiptFrame(
                        seq=0,
                        message_id=effect.message_id,
                        user_id=effect.user_id,
                        status=wire.ReceiptStatus(effect.status.value),
                    )
                )
                receipts.append(
                    NewEvent(user_id=effect.to, kind=EventKind.RECEIPT, payload=payload)
                )
            # PushToDevice / relay effects do not arise from acks and reads.
    if records:
        await services.storage.messages.set_deliveries(records)
    if receipts:
        events = await services.storage.events.append(receipts)
        await _announce(hub, events)


@contextlib.asynccontextmanager
async def _locked(services: Services, message_ids: Sequence[str]) -> AsyncIterator[None]:
    """Hold the stripes of all ``message_ids``, taken in index order (no deadlock between
    two batches that share stripes)."""
    locks = services.delivery_locks
    async with contextlib.AsyncExitStack() as stack:
        for index in sorted({hash(m) % len(locks) for m in message_ids}):
            await stack.enter_async_context(locks[index])
        yield


async def record_device_ack(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    *,
    user_id: str,
    device_id: str | None,
    events: Sequence[StreamEvent],
) -> None:
    """The device of ``user_id`` acked these stream events: messages from others among
    them are delivered to it. Without a known ``device_id`` the ack counts for every
    tracked device of the user (a user-level receipt is all the sender sees).
    The whole batch is one write of delivery rows and one append of receipts."""
    messages: dict[str, Message] = {}
    for event in events:
        message = event.message
        if event.kind is not EventKind.MESSAGE or message is None:
            continue
        if message.sender_id == user_id:
            continue
        messages.setdefault(message.id, message)
    if not messages:
        return
    lookups: dict[str, tuple[str, bool, bool]] = {}
    work: list[tuple[Message, Sequence[delivery.DeliveryEffect]]] = []
    async with _locked(services, list(messages)):
        for state in await _delivery_states(services, list(messages.values()), lookups):
            message = messages[state.message_id]
            if device_id is not None and device_id in state.devices:
                targets = [device_id]
            else:
                targets = list(state.devices)
            effects: list[delivery.DeliveryEffect] = []
            for target in targets:
                decision = delivery.handle(state, delivery.DeviceAcked(target), services.clock())
                state = decision.state
                effects.extend(decision.effects)
            if effects:
                work.append((message, effects))
        await _perform(services, hub, metrics, work)


async def mark_read(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    *,
    user_id: str,
    conversation_id: str,
    up_to: str,
) -> None:
    """Move the reader's mark to ``up_to`` and emit read receipts (if the reader has
    them enabled). Raises NotFound."""
    conversation = await load_conversation(services, conversation_id, user_id)
    reader = await services.storage.users.get(user_id)
    newly_read = await services.storage.messages.mark_read(conversation.id, user_id, up_to)
    if not newly_read:
        return
    lookups: dict[str, tuple[str, bool, bool]] = {}
    work: list[tuple[Message, Sequence[delivery.DeliveryEffect]]] = []
    async with _locked(services, [m.id for m in newly_read]):
        states = await _delivery_states(services, newly_read, lookups)
        for message, state in zip(newly_read, states, strict=True):
            event = delivery.ReadByRecipient(
                device_id=None, read_receipts_enabled=reader.settings.read_receipts
            )
            if not state.devices:
                continue  # the reader had no device when it was sent: nothing to track
            decision = delivery.handle(state, event, services.clock())
            work.append((message, decision.effects))
        await _perform(services, hub, metrics, work)


def viewer_status(
    message: Message, viewer_id: str, records: Sequence[DeliveryRecord] | None
) -> DeliveryStatus:
    """The status shown to ``viewer_id``: the sender sees the recipient's progress,
    the recipient sees ``delivered`` (they have it)."""
    if message.sender_id != viewer_id:
        return DeliveryStatus.DELIVERED
    statuses = [r.status for r in records or ()]
    return max(statuses, key=delivery.RANK.__getitem__, default=DeliveryStatus.ACCEPTED)
