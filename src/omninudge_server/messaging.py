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
import logging
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

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
    "known_conversation",
    "load_conversation",
    "mark_read",
    "record_device_ack",
    "send_message",
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
    change), which spares the read.

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
    if (
        conversation is None
        or conversation.id != conversation_id
        or conversation.kind is not ConversationKind.PLATFORM
        or not conversation.has(sender_id)
    ):
        conversation = await known_conversation(services, conversation_id, sender_id)
    recipient_id = conversation.other(sender_id)
    if conversation.kind is ConversationKind.PLATFORM and envelope is not None:
        # The reads the checks below need, queued at once: one wait instead of two.
        # Each result (or error) is used where the sequential code used it, so the
        # checks and the error a client sees keep their order.
        relation_r, devices_r = await _side_by_side(
            _block_relation(services, sender_id, recipient_id),
            services.storage.devices.for_users([sender_id, recipient_id]),
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
        await _announce(hub, appended.events)
    elif appended.message.conversation_id != conversation.id:
        raise InvalidFrame(
            "client_msg_id was already used in another conversation",
            code="invalid_field",
            field="client_msg_id",
        )
    return SendOutcome(appended.message, appended.created)


async def _side_by_side(
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


def _ok(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result


async def _announce(hub: Hub, events: Sequence[StreamEvent]) -> None:
    """One fan-out notice per user, naming the user's newest seq among ``events``."""
    hub.remember(events)  # the connections push these without reading them back
    heads: dict[str, int] = {}
    for event in events:
        heads[event.user_id] = max(heads.get(event.user_id, 0), event.seq)
    for user_id, seq in heads.items():
        await hub.notify_events(user_id, seq)


async def _conversations(
    services: Services, messages: Iterable[Message]
) -> dict[str, Conversation]:
    """The conversation of each message, by id: PLATFORM ones from the process's cache,
    the others read once per batch."""
    found: dict[str, Conversation] = {}
    for message in messages:
        conversation_id = message.conversation_id
        if conversation_id in found:
            continue
        conversation = services.known_conversations.get(conversation_id)
        if conversation is None:
            conversation = await services.storage.conversations.get(conversation_id)
            services.known_conversations.add(conversation)
        found[conversation_id] = conversation
    return found


async def _delivery_states(
    services: Services,
    messages: Sequence[Message],
    conversations: Mapping[str, Conversation],
    records: Mapping[str, Sequence[DeliveryRecord]],
    read_receipts: dict[str, bool],
) -> list[delivery.RecipientDelivery]:
    """The delivery state of each message, in order, from its rows (``records``).

    ``read_receipts`` (recipient -> setting) is completed from the store for the
    recipients of messages a device has already read: only those can the setting
    concern (``delivery._receipts_due`` asks for it only when a device is at ``read``,
    and an ack never moves one there). So an ack batch reads no user unless a message
    in it was read elsewhere first; tests/server/test_messaging_batches.py holds the
    machine to that."""
    recipients = [conversations[m.conversation_id].other(m.sender_id) for m in messages]
    wanted: set[str] = set()
    for message, recipient_id in zip(messages, recipients, strict=True):
        if recipient_id not in read_receipts:
            for record in records.get(message.id, ()):
                if record.status is DeliveryStatus.READ:
                    wanted.add(recipient_id)
                    break
    if wanted:
        users = await services.storage.users.get_many(sorted(wanted))
        for recipient_id in wanted:
            if recipient_id not in users:
                raise NotFound(f"no user {recipient_id}")
            read_receipts[recipient_id] = users[recipient_id].settings.read_receipts
    return [
        delivery.RecipientDelivery.from_records(
            message_id=message.id,
            conversation_id=message.conversation_id,
            sender_id=message.sender_id,
            recipient_id=recipient_id,
            records=records.get(message.id, ()),
            reddit_only=conversations[message.conversation_id].kind is ConversationKind.REDDIT,
            # Not asked for (no device has read it): the value changes no decision.
            read_receipts_enabled=read_receipts.get(recipient_id, True),
        )
        for message, recipient_id in zip(messages, recipients, strict=True)
    ]


async def _perform(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    work: Sequence[tuple[Message, Sequence[delivery.DeliveryEffect]]],
    blocked: dict[tuple[str, str], bool] | None = None,
) -> None:
    """Carry out the effects of one or more messages with one write of delivery rows
    and one append of receipt events (an ack batch costs two writes, not 2 per message),
    then one fan-out notice per user. ``blocked``: (reader, sender) pairs already looked
    up; others are read here, once per pair."""
    now = services.clock()
    records: list[DeliveryRecord] = []
    receipts: list[NewEvent] = []
    blocked = {} if blocked is None else blocked
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
    if records and receipts:
        # Issued together so that they share one group commit (one fsync, one round
        # trip); both commit or neither does, short of a store refusing one of them.
        _, events = await asyncio.gather(
            services.storage.messages.set_deliveries(records),
            services.storage.events.append(receipts),
        )
        await _announce(hub, events)
    elif records:
        await services.storage.messages.set_deliveries(records)
    elif receipts:
        events = await services.storage.events.append(receipts)
        await _announce(hub, events)


class _Locked:
    """Holds the lock stripes of some recipients, taken in index order (no deadlock
    between two batches). Every change of a platform message's delivery rows is made for
    its recipient (their device acked, they read), so a stripe per recipient serialises
    each read-modify-write of those rows; a batch, one recipient's, takes one lock."""

    def __init__(self, services: Services, recipient_ids: Iterable[str]) -> None:
        locks = services.delivery_locks
        self._locks = [locks[i] for i in sorted({hash(r) % len(locks) for r in recipient_ids})]
        self._held = 0

    async def __aenter__(self) -> None:
        try:
            for lock in self._locks:
                await lock.acquire()
                self._held += 1
        except BaseException:
            self._release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._held:
            self._held -= 1
            self._locks[self._held].release()


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

    The whole batch costs one read of delivery rows, one write of them and one append
    of receipts (plus a read of a conversation the process has not seen, and of the
    user when a message in the batch was already read), and one fan-out notice per
    sender."""
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
    batch = list(messages.values())
    conversations = await _conversations(services, batch)
    recipients = {conversations[m.conversation_id].other(m.sender_id) for m in batch}
    work: list[tuple[Message, Sequence[delivery.DeliveryEffect]]] = []
    async with _Locked(services, recipients):
        records = await services.storage.messages.deliveries_many(list(messages))
        states = await _delivery_states(services, batch, conversations, records, {})
        now = services.clock()
        for message, state in zip(batch, states, strict=True):
            if device_id is not None and device_id in state.devices:
                targets = [device_id]
            else:
                targets = list(state.devices)
            effects: list[delivery.DeliveryEffect] = []
            for target in targets:
                decision = delivery.handle(state, delivery.DeviceAcked(target), now)
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
    them enabled). Raises NotFound.

    Costs the reader's read and the mark's write, then, if it covered new messages,
    one read of their delivery rows (with the block relation beside it when read
    receipts are on), one write of them and one append of receipts."""
    conversation = await known_conversation(services, conversation_id, user_id)
    # Read before the mark moves: a failure here leaves nothing half-done.
    reader = await services.storage.users.get(user_id)
    enabled = reader.settings.read_receipts
    newly_read = await services.storage.messages.mark_read(conversation.id, user_id, up_to)
    if not newly_read:
        return
    other_id = conversation.other(user_id)
    pair = (user_id, other_id)
    blocked: dict[tuple[str, str], bool] = {}
    work: list[tuple[Message, Sequence[delivery.DeliveryEffect]]] = []
    async with _Locked(services, [user_id]):
        message_ids = [m.id for m in newly_read]
        if enabled:
            # A read receipt is not sent across a block (``_perform``): ask at once.
            records_r, relation_r = await _side_by_side(
                services.storage.messages.deliveries_many(message_ids),
                _block_relation(services, *pair),
            )
            records = _ok(records_r)
            blocked[pair] = blocking.blocked_between(_ok(relation_r), *pair)
        else:
            records = await services.storage.messages.deliveries_many(message_ids)
        conversations = {conversation.id: conversation}
        states = await _delivery_states(
            services, newly_read, conversations, records, {user_id: enabled}
        )
        now = services.clock()
        event = delivery.ReadByRecipient(device_id=None, read_receipts_enabled=enabled)
        for message, state in zip(newly_read, states, strict=True):
            if not state.devices:
                continue  # the reader had no device when it was sent: nothing to track
            decision = delivery.handle(state, event, now)
            work.append((message, decision.effects))
        await _perform(services, hub, metrics, work, blocked)


def viewer_status(
    message: Message, viewer_id: str, records: Sequence[DeliveryRecord] | None
) -> DeliveryStatus:
    """The status shown to ``viewer_id``: the sender sees the recipient's progress,
    the recipient sees ``delivered`` (they have it)."""
    if message.sender_id != viewer_id:
        return DeliveryStatus.DELIVERED
    statuses = [r.status for r in records or ()]
    return max(statuses, key=delivery.RANK.__getitem__, default=DeliveryStatus.ACCEPTED)
