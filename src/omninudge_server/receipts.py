"""The ack and read paths: delivery rows and ``receipt`` events, shared by REST and the
WebSocket.

Delivery decisions (which receipt, when) belong to ``omninudge_core.delivery``; this
module loads its state from the delivery rows, feeds it what happened (a device acked,
the recipient read) and performs the effects: persist rows, append a ``receipt`` event
to the SENDER's stream, announce it. A batch (an ack of many messages, a read mark over
many) costs a constant number of store calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from omninudge_core import codec, delivery, wire
from omninudge_core.errors import NotFound
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    EventKind,
    Message,
    StreamEvent,
)
from omninudge_core.policies import blocking
from omninudge_core.ports import NewEvent
from omninudge_server.messaging import block_relation, known_conversation, side_by_side, unwrap
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["mark_read", "record_device_ack"]


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
                        relation = await block_relation(services, *pair)
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
        await hub.announce(events)
    elif records:
        await services.storage.messages.set_deliveries(records)
    elif receipts:
        events = await services.storage.events.append(receipts)
        await hub.announce(events)


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
            records_r, relation_r = await side_by_side(
                services.storage.messages.deliveries_many(message_ids),
                block_relation(services, *pair),
            )
            records = unwrap(records_r)
            blocked[pair] = blocking.blocked_between(unwrap(relation_r), *pair)
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
