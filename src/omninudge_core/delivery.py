"""Delivery of one message to one recipient: a Sans-I/O state machine.

Theory of operation
-------------------
A message is accepted once the store has committed it (API.md durability rule). From
then on the shell feeds this machine what happened on the wire and performs the
effects it returns. One ``RecipientDelivery`` follows one message to one recipient
user, on one of two routes that never mix:

- ``Route.PLATFORM``: the recipient is on the platform; each of their devices is
  tracked on its own, ``accepted -> pushed -> delivered (the device acked) -> read``.
  A device may skip steps (an ack can overtake the push report, a read can come
  from another device first) but never moves back.
- ``Route.REDDIT``: the recipient is Reddit-only; one pseudo-device ``"reddit"``
  goes ``accepted -> relayed_to_reddit`` or ``accepted -> relay_failed``, and
  ``relay_failed -> relayed_to_reddit`` on a successful retry. The shell passes a
  ``retry_at`` with a failure; ``next_deadline`` exposes it and the shell feeds
  ``RelayRetryDue`` when it is reached.

Receipts are user-level, not device-level: the sender hears "delivered" when the
first device acks and "read" when the recipient reads (only if the reader has read
receipts enabled). Each is sent at most once. Read implies delivered, so after a
"read" receipt no "delivered" receipt ever follows.

The wire is at-least-once: a second ack, a re-push after a reconnect or a repeated
relay report is a duplicate and yields the same state and no effects - never an
error. An input the table does not list for the current status (a device ack on the
Reddit route, a relay report for a platform recipient, an unknown device) raises
``IllegalTransition`` before anything changes.

Invariants
----------
1. A device's status never moves backwards (``RANK``).
2. Read implies delivered: once a read receipt is sent, "delivered" counts as sent.
3. At most one "delivered" and one "read" receipt per message per recipient.
4. Duplicates are no-ops with no effects.
5. Platform statuses and Reddit statuses never appear in the same state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from omninudge_core.decision import Decision
from omninudge_core.errors import IllegalTransition
from omninudge_core.models import (
    ConversationId,
    DeliveryRecord,
    DeliveryStatus,
    DeviceId,
    Instant,
    MessageId,
    UserId,
)

__all__ = [
    "PLATFORM_STATUSES",
    "RANK",
    "REDDIT_DEVICE",
    "REDDIT_STATUSES",
    "TRANSITIONS",
    "DeliveryEffect",
    "DeliveryInput",
    "DeviceAcked",
    "PersistDeliveries",
    "PushToDevice",
    "PushedToDevice",
    "ReadByRecipient",
    "RecipientDelivery",
    "RecordRelayFailure",
    "RelayFailed",
    "RelayRetryDue",
    "RelaySucceeded",
    "RelayToReddit",
    "Route",
    "SendReceipt",
    "Transition",
    "accept",
    "describe_transitions",
    "handle",
    "next_deadline",
    "overall_status",
]

MACHINE = "delivery"

REDDIT_DEVICE: DeviceId = "reddit"
"""The pseudo-device of a Reddit-only recipient (``DeliveryRecord.device_id``)."""

# Progress order per route; a transition may keep or raise the rank, never lower it.
RANK: Mapping[DeliveryStatus, int] = MappingProxyType(
    {
        DeliveryStatus.ACCEPTED: 0,
        DeliveryStatus.PUSHED: 1,
        DeliveryStatus.DELIVERED: 2,
        DeliveryStatus.READ: 3,
        DeliveryStatus.RELAY_FAILED: 1,
        DeliveryStatus.RELAYED_TO_REDDIT: 2,
    }
)

PLATFORM_STATUSES = frozenset(
    {
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.PUSHED,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.READ,
    }
)
REDDIT_STATUSES = frozenset(
    {DeliveryStatus.ACCEPTED, DeliveryStatus.RELAYED_TO_REDDIT, DeliveryStatus.RELAY_FAILED}
)


# --- states -----------------------------------------------------------------------------


class Route(enum.Enum):
    PLATFORM = "platform"
    REDDIT = "reddit"


def _freeze(devices: Mapping[DeviceId, DeliveryStatus]) -> Mapping[DeviceId, DeliveryStatus]:
    # A read-only view over a private copy: the state cannot be changed through it.
    return MappingProxyType(dict(sorted(devices.items())))


@attrs.frozen
class RecipientDelivery:
    """Delivery of ``message_id`` to ``recipient_id``: one status per device.

    ``receipts_sent`` holds ``DELIVERED``/``READ``: the user-level receipts the sender
    has been sent (``READ`` implies ``DELIVERED``). ``read_receipts_enabled`` is the
    recipient's setting. The ``relay_*`` fields are used on the Reddit route only.
    """

    message_id: MessageId
    conversation_id: ConversationId
    sender_id: UserId
    recipient_id: UserId
    route: Route
    devices: Mapping[DeviceId, DeliveryStatus] = attrs.field(converter=_freeze)
    receipts_sent: frozenset[DeliveryStatus] = frozenset()
    read_receipts_enabled: bool = True
    reddit_fullname: str | None = None
    relay_failures: int = 0
    relay_retry_at: Instant | None = None

    @classmethod
    def from_records(
        cls,
        *,
        message_id: MessageId,
        conversation_id: ConversationId,
        sender_id: UserId,
        recipient_id: UserId,
        records: Iterable[DeliveryRecord],
        reddit_only: bool,
        read_receipts_enabled: bool,
        reddit_fullname: str | None = None,
    ) -> RecipientDelivery:
        """Rebuild the state from stored delivery rows (``MessageStore.deliveries``).

        Receipts are derived: ``handle`` always sends a receipt in the same decision
        that makes it due, so a persisted status implies its receipt went out.
        """
        devices = {
            r.device_id: r.status
            for r in records
            if r.message_id == message_id and r.recipient_id == recipient_id
        }
        route = Route.REDDIT if reddit_only else Route.PLATFORM
        _, receipts_sent = _receipts_due_for(
            route, devices.values(), frozenset(), read_receipts_enabled
        )
        return cls(
            message_id=message_id,
            conversation_id=conversation_id,
            sender_id=sender_id,
            recipient_id=recipient_id,
            route=route,
            devices=devices,
            receipts_sent=receipts_sent,
            read_receipts_enabled=read_receipts_enabled,
            reddit_fullname=reddit_fullname,
        )


def overall_status(state: RecipientDelivery) -> DeliveryStatus:
    """The user-level status: the most advanced status of any device (``accepted``
    when the recipient has no device yet)."""
    return max(state.devices.values(), key=RANK.__getitem__, default=DeliveryStatus.ACCEPTED)


# --- inputs (events reported by the shell) ----------------------------------------------


@attrs.frozen
class PushedToDevice:
    """The message was written to a connection of ``device_id``."""

    device_id: DeviceId


@attrs.frozen
class DeviceAcked:
    """``device_id`` acknowledged the message (stream ``ack`` covering it)."""

    device_id: DeviceId


@attrs.frozen
class ReadByRecipient:
    """The recipient read the message: on ``device_id``, or on every device when None
    (``POST /api/conversations/{id}/read``). ``read_receipts_enabled``, when given,
    is the reader's setting now and replaces the one held in the state."""

    device_id: DeviceId | None = None
    read_receipts_enabled: bool | None = None


@attrs.frozen
class RelaySucceeded:
    """Reddit accepted the private message; ``fullname`` is its ``t4_…`` id."""

    fullname: str


@attrs.frozen
class RelayFailed:
    """Relaying through Reddit failed. ``retry_at`` is when to try again; None = give up."""

    reason: str
    retry_at: Instant | None = None


@attrs.frozen
class RelayRetryDue:
    """The shell's timer for ``next_deadline`` fired."""


DeliveryInput = (
    PushedToDevice | DeviceAcked | ReadByRecipient | RelaySucceeded | RelayFailed | RelayRetryDue
)


# --- effects (I/O for the shell to perform) ---------------------------------------------


@attrs.frozen
class PersistDeliveries:
    """Upsert these rows (``MessageStore.set_deliveries``)."""

    records: tuple[DeliveryRecord, ...]


@attrs.frozen
class PushToDevice:
    user_id: UserId
    device_id: DeviceId
    message_id: MessageId


@attrs.frozen
class SendReceipt:
    """Tell ``to`` (the sender) that ``user_id`` has the message; a ``receipt`` frame."""

    to: UserId
    conversation_id: ConversationId
    message_id: MessageId
    user_id: UserId
    status: DeliveryStatus  # DELIVERED or READ


@attrs.frozen
class RelayToReddit:
    """Send the (plaintext) message to the Reddit-only recipient as a private message."""

    message_id: MessageId
    recipient_id: UserId


@attrs.frozen
class RecordRelayFailure:
    message_id: MessageId
    reason: str
    failures: int  # how many attempts have failed so far, this one included
    retry_at: Instant | None


DeliveryEffect = PersistDeliveries | PushToDevice | SendReceipt | RelayToReddit | RecordRelayFailure


# --- the transition table ---------------------------------------------------------------


@attrs.frozen
class Transition:
    """One row: the status a device moves to and what the shell is asked to do."""

    to: DeliveryStatus
    effects: str


_A, _P, _D, _R = (
    DeliveryStatus.ACCEPTED,
    DeliveryStatus.PUSHED,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.READ,
)
_RELAYED, _FAILED = DeliveryStatus.RELAYED_TO_REDDIT, DeliveryStatus.RELAY_FAILED
_PL, _RD = Route.PLATFORM, Route.REDDIT
_NONE = "none (duplicate)"
_STALE_TIMER = "none (stale timer)"
_DELIVERED_FX = "PersistDeliveries; SendReceipt(delivered) if first"
_READ_FX = "PersistDeliveries; SendReceipt(read) if first and enabled, else (delivered) if first"

TRANSITIONS: Mapping[tuple[Route, DeliveryStatus, type[DeliveryInput]], Transition] = (
    MappingProxyType(
        {
            (_PL, _A, PushedToDevice): Transition(_P, "PersistDeliveries"),
            (_PL, _P, PushedToDevice): Transition(_P, _NONE),
            (_PL, _D, PushedToDevice): Transition(_D, _NONE),
            (_PL, _R, PushedToDevice): Transition(_R, _NONE),
            # An ack may overtake the shell's own push report.
            (_PL, _A, DeviceAcked): Transition(_D, _DELIVERED_FX),
            (_PL, _P, DeviceAcked): Transition(_D, _DELIVERED_FX),
            (_PL, _D, DeviceAcked): Transition(_D, _NONE),
            (_PL, _R, DeviceAcked): Transition(_R, _NONE),
            # Read implies delivered: the status jumps straight to read.
            (_PL, _A, ReadByRecipient): Transition(_R, _READ_FX),
            (_PL, _P, ReadByRecipient): Transition(_R, _READ_FX),
            (_PL, _D, ReadByRecipient): Transition(_R, _READ_FX),
            (_PL, _R, ReadByRecipient): Transition(_R, "SendReceipt(read) if newly enabled"),
            (_RD, _A, RelaySucceeded): Transition(_RELAYED, "PersistDeliveries"),
            (_RD, _FAILED, RelaySucceeded): Transition(_RELAYED, "PersistDeliveries"),
            (_RD, _RELAYED, RelaySucceeded): Transition(_RELAYED, _NONE),
            (_RD, _A, RelayFailed): Transition(_FAILED, "PersistDeliveries; RecordRelayFailure"),
            (_RD, _FAILED, RelayFailed): Transition(_FAILED, "RecordRelayFailure"),
            # A redundant attempt that failed after another one succeeded changes nothing.
            (_RD, _RELAYED, RelayFailed): Transition(_RELAYED, _NONE),
            (_RD, _FAILED, RelayRetryDue): Transition(_FAILED, "RelayToReddit if retry_at reached"),
            # The timer raced a success.
            (_RD, _RELAYED, RelayRetryDue): Transition(_RELAYED, _STALE_TIMER),
        }
    )
)


def describe_transitions() -> list[tuple[str, str, str, str, str]]:
    """The table as rows ``(route, status, input, next status, effects)`` for docs."""
    return [
        (route.value, status.value, event.__name__, t.to.value, t.effects)
        for (route, status, event), t in TRANSITIONS.items()
    ]


# --- entry points -----------------------------------------------------------------------


def accept(
    *,
    message_id: MessageId,
    conversation_id: ConversationId,
    sender_id: UserId,
    recipient_id: UserId,
    device_ids: Iterable[DeviceId],
    reddit_only: bool,
    now: Instant,
    read_receipts_enabled: bool = True,
) -> Decision[RecipientDelivery, DeliveryEffect]:
    """Start tracking a committed message: persist ``accepted`` rows and push to every
    device, or relay through Reddit for a Reddit-only recipient.

    Raises ValueError when a Reddit-only recipient is given devices.
    """
    devices = tuple(dict.fromkeys(device_ids))
    if reddit_only and devices:
        raise ValueError("a Reddit-only recipient has no platform devices")
    route = Route.REDDIT if reddit_only else Route.PLATFORM
    tracked = (REDDIT_DEVICE,) if reddit_only else devices
    state = RecipientDelivery(
        message_id=message_id,
        conversation_id=conversation_id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        route=route,
        devices=dict.fromkeys(tracked, DeliveryStatus.ACCEPTED),
        read_receipts_enabled=read_receipts_enabled,
    )
    effects: list[DeliveryEffect] = [PersistDeliveries(_records(state, state.devices.keys(), now))]
    if reddit_only:
        effects.append(RelayToReddit(message_id, recipient_id))
    else:
        effects.extend(PushToDevice(recipient_id, d, message_id) for d in state.devices)
    return Decision(state, tuple(effects))


def handle(
    state: RecipientDelivery, event: DeliveryInput, now: Instant
) -> Decision[RecipientDelivery, DeliveryEffect]:
    """Apply one reported event; return the new state and the effects to perform.

    Raises IllegalTransition (nothing changed) when the event is not in
    ``TRANSITIONS`` for the status of a device it concerns, or names a device
    this delivery does not track.
    """
    # Look every concerned device up first so a refusal leaves nothing half-done.
    moves: dict[DeviceId, Transition] = {}
    for device_id in _concerned_devices(state, event):
        current = state.devices.get(device_id)
        transition = (
            None if current is None else TRANSITIONS.get((state.route, current, type(event)))
        )
        if transition is None:
            where = (
                "untracked device" if current is None else f"{state.route.value}/{current.value}"
            )
            raise IllegalTransition(MACHINE, where, type(event).__name__)
        moves[device_id] = transition

    changed = [d for d, t in moves.items() if t.to is not state.devices[d]]
    new = state
    if changed:
        new = attrs.evolve(new, devices={**state.devices, **{d: moves[d].to for d in changed}})
    effects: list[DeliveryEffect] = []
    if changed:
        effects.append(PersistDeliveries(_records(new, changed, now)))

    match event:
        case ReadByRecipient(read_receipts_enabled=enabled) if enabled is not None:
            new = attrs.evolve(new, read_receipts_enabled=enabled)
        case RelaySucceeded(fullname=fullname) if changed:
            new = attrs.evolve(new, reddit_fullname=fullname, relay_retry_at=None)
        case RelayFailed(reason=reason, retry_at=retry_at) if (
            state.devices[REDDIT_DEVICE] is not _RELAYED
        ):
            failures = state.relay_failures + 1
            new = attrs.evolve(new, relay_failures=failures, relay_retry_at=retry_at)
            effects.append(RecordRelayFailure(state.message_id, reason, failures, retry_at))
        case RelayRetryDue() if (
            state.devices[REDDIT_DEVICE] is _FAILED
            and state.relay_retry_at is not None
            and now >= state.relay_retry_at
        ):
            new = attrs.evolve(new, relay_retry_at=None)
            effects.append(RelayToReddit(state.message_id, state.recipient_id))
        case _:
            pass

    status, sent = _receipts_due(new)
    if status is not None:
        new = attrs.evolve(new, receipts_sent=sent)
        effects.append(
            SendReceipt(
                new.sender_id, new.conversation_id, new.message_id, new.recipient_id, status
            )
        )
    return Decision(new, tuple(effects))


def next_deadline(state: RecipientDelivery) -> Instant | None:
    """When the shell should feed ``RelayRetryDue`` (None: no timer)."""
    if state.route is Route.REDDIT and state.devices.get(REDDIT_DEVICE) is _FAILED:
        return state.relay_retry_at
    return None


# --- helpers ----------------------------------------------------------------------------


def _concerned_devices(state: RecipientDelivery, event: DeliveryInput) -> tuple[DeviceId, ...]:
    match event:
        case PushedToDevice(device_id=device_id) | DeviceAcked(device_id=device_id):
            return (device_id,)
        case ReadByRecipient(device_id=device_id):
            return tuple(state.devices) if device_id is None else (device_id,)
        case _:
            return (REDDIT_DEVICE,)


def _records(
    state: RecipientDelivery, device_ids: Iterable[DeviceId], now: Instant
) -> tuple[DeliveryRecord, ...]:
    return tuple(
        DeliveryRecord(state.message_id, state.recipient_id, d, state.devices[d], now)
        for d in device_ids
    )


def _receipts_due(
    state: RecipientDelivery,
) -> tuple[DeliveryStatus | None, frozenset[DeliveryStatus]]:
    """The receipt to send now (if any) and ``receipts_sent`` after sending it."""
    return _receipts_due_for(
        state.route, state.devices.values(), state.receipts_sent, state.read_receipts_enabled
    )


def _receipts_due_for(
    route: Route,
    device_statuses: Iterable[DeliveryStatus],
    sent: frozenset[DeliveryStatus],
    read_receipts_enabled: bool,
) -> tuple[DeliveryStatus | None, frozenset[DeliveryStatus]]:
    if route is not Route.PLATFORM:
        return None, sent
    statuses = set(device_statuses)
    if _R in statuses and read_receipts_enabled and _R not in sent:
        # Read covers delivered: a delivered receipt must never follow a read one.
        return _R, sent | {_R, _D}
    if (_R in statuses or _D in statuses) and _D not in sent:
        return _D, sent | {_D}
    return None, sent
