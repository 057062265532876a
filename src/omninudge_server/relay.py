"""Reaching people who are not on OmniNudge yet, through Reddit.

``open_reddit_conversation``: ``POST /api/conversations {reddit_username}`` for someone
not on the platform checks the name on Reddit (``/user/{name}/about``, with the
caller's token), creates a placeholder user (``on_platform=false``, their Reddit id)
and the conversation (kind ``reddit``, ``upgrade_state`` ``reddit_only``) and starts
its migration.

``relay_message``: a text sent in such a conversation is committed first (origin
``reddit``, plaintext: Reddit cannot carry our envelopes), then the delivery machine's
Reddit route sends it as a private message with the SENDER's Reddit token. The first
relay that succeeds carries the invitation link (``/invite/{token}``, one invitation
per conversation) and moves the migration to ``invited``. The sender sees the outcome
in the message's ``status`` (``relayed_to_reddit`` or ``relay_failed``), on failure in
``relay_error`` (API.md error shape: ``reddit_user_not_found``,
``reddit_recipient_refused`` with e.g. ``NOT_WHITELISTED_BY_USER_MESSAGE``,
``reddit_rate_limited``...), and on every device through a ``receipt`` event with that
status. After a rate limit or an outage the delivery machine sets a retry time and
the relay is tried again (three attempts in all, in this process only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from omninudge_core import codec, delivery, migration, wire
from omninudge_core.errors import (
    Conflict,
    Forbidden,
    InvalidFrame,
    NotFound,
    OmniNudgeError,
    ProtocolError,
    RateLimited,
    Unavailable,
)
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    Envelope,
    EventKind,
    Invitation,
    Message,
    Origin,
    UpgradeState,
    User,
)
from omninudge_core.ports import NewEvent
from omninudge_server.migrations import relay_body
from omninudge_server.reddit_access import RedditAccess, RedditLoginRequired
from omninudge_server.reddit_feature import RedditFeature, require_reddit

if TYPE_CHECKING:
    from omninudge_server.messaging import SendOutcome
    from omninudge_server.metrics import Metrics
    from omninudge_server.realtime import Hub
    from omninudge_server.wiring import Services

__all__ = ["open_reddit_conversation", "relay_message"]

logger = logging.getLogger("omninudge.relay")

SUBJECT = "A message from u/{sender} via OmniNudge"
RELAY_ATTEMPTS = 3  # in all, after a rate limit or an outage
RELAY_RETRY_S = 30.0  # after an outage (a rate limit names its own time)


async def open_reddit_conversation(
    services: Services, caller: User, reddit_username: str
) -> tuple[Conversation, bool]:
    """The conversation of ``caller`` with a Reddit-only person (idempotent).

    Raises Unavailable (Reddit not configured or down), RedditLoginRequired (the caller
    has no Reddit token), NotFound(code="reddit_user_not_found"), Forbidden
    (``reddit_user_suspended``)."""
    feature = require_reddit(services)
    users = services.storage.users
    other = await users.by_username(reddit_username)
    if other is None:
        profile = await RedditAccess(services, feature).call(
            caller.id, lambda token: feature.client.user_about(token, reddit_username)
        )
        if profile.is_suspended:
            raise Forbidden(
                f"u/{profile.name} is suspended on Reddit", code="reddit_user_suspended"
            )
        placeholder = User(
            id=services.new_id(),
            username=profile.name,
            created_at=services.clock(),
            reddit_id=profile.id,
            on_platform=False,
        )
        try:
            other = await users.create(placeholder)
        except Conflict:
            other = await users.by_username(profile.name)  # created meanwhile
            if other is None:
                raise
    if other.id == caller.id:
        raise InvalidFrame(
            "you cannot start a conversation with yourself",
            code="invalid_field",
            field="reddit_username",
        )
    conversation, created = await services.storage.conversations.get_or_create(
        Conversation(
            id=services.new_id(),
            participants=(caller.id, other.id),
            kind=ConversationKind.REDDIT,
            created_at=services.clock(),
            upgrade_state=UpgradeState.REDDIT_ONLY,
        )
    )
    if conversation.kind is ConversationKind.REDDIT and not other.on_platform:
        await _migration_of(services, feature, conversation, inviter=caller, contact=other)
    return conversation, created


async def _migration_of(
    services: Services,
    feature: RedditFeature,
    conversation: Conversation,
    *,
    inviter: User,
    contact: User,
) -> migration.MigrationState:
    assert feature.worker is not None
    state = await feature.worker.load(conversation.id)
    if state is not None:
        return state
    ctx = migration.MigrationContext(
        conversation.id, inviter.id, inviter.username, contact.username
    )
    return await feature.worker.begin(ctx)


async def relay_message(
    services: Services,
    hub: Hub,
    metrics: Metrics,
    *,
    conversation: Conversation,
    sender_id: str,
    recipient: User,
    client_msg_id: str,
    envelope: Envelope | None,
    text: str | None,
) -> SendOutcome:
    """Commit a text for a Reddit-only recipient, then relay it through Reddit.

    Raises Unavailable (Reddit not configured), InvalidFrame (an envelope instead of a
    text), RedditLoginRequired (the sender has no Reddit token)."""
    from omninudge_server.messaging import SendOutcome

    feature = require_reddit(services)
    if text is None or envelope is not None:
        raise InvalidFrame(
            "a Reddit-only recipient gets a plain text (Reddit cannot carry envelopes)",
            code="missing_field" if text is None else "invalid_field",
            field="text",
        )
    access = RedditAccess(services, feature)
    if not await access.has_token(sender_id):
        raise RedditLoginRequired(
            "messages to Reddit-only people go through your Reddit account: log in with Reddit"
        )
    now = services.clock()
    message = Message(
        id=services.new_id(),
        conversation_id=conversation.id,
        sender_id=sender_id,
        client_msg_id=client_msg_id,
        origin=Origin.REDDIT,
        sent_at=now,
        text=text,
    )
    accepted = delivery.accept(
        message_id=message.id,
        conversation_id=conversation.id,
        sender_id=sender_id,
        recipient_id=recipient.id,
        device_ids=(),
        reddit_only=True,
        now=now,
    )
    records = [
        record
        for effect in accepted.effects
        if isinstance(effect, delivery.PersistDeliveries)
        for record in effect.records
    ]
    appended = await services.storage.messages.append(
        message, records, notify=[recipient.id, sender_id]
    )
    if not appended.created:
        if appended.message.conversation_id != conversation.id:
            raise InvalidFrame(
                "client_msg_id was already used in another conversation",
                code="invalid_field",
                field="client_msg_id",
            )
        return SendOutcome(appended.message, False)  # a replay: relayed (or not) before
    metrics.messages_sent.labels(origin=message.origin.value).inc()
    await hub.announce(appended.events)
    state, error = await _relay(
        services, hub, feature, conversation, recipient, message, accepted.state
    )
    if delivery.next_deadline(state) is not None:
        feature.spawn(
            _retry_relays(services, hub, feature, conversation, recipient, message, state)
        )
    return SendOutcome(appended.message, True, relay_error=error)


async def _relay(
    services: Services,
    hub: Hub,
    feature: RedditFeature,
    conversation: Conversation,
    recipient: User,
    message: Message,
    state: delivery.RecipientDelivery,
) -> tuple[delivery.RecipientDelivery, OmniNudgeError | None]:
    """The ``RelayToReddit`` effect: compose as the sender, then feed the outcome to the
    delivery machine (status, receipt, retry time) and the migration machine."""
    sender = await services.storage.users.get(message.sender_id)
    stage = await _migration_of(services, feature, conversation, inviter=sender, contact=recipient)
    invite_token: str | None = None
    if isinstance(stage, migration.RedditOnly) and stage.ctx.inviter_id == sender.id:
        invite_token = feature.invite_token(conversation.id)
        await _ensure_invitation(services, conversation, sender, recipient, invite_token)
    invite_url = (
        None if invite_token is None else f"{services.settings.public_url}/invite/{invite_token}"
    )
    assert message.text is not None
    body = relay_body(message.text, invite_url)
    subject = SUBJECT.format(sender=sender.username)
    error: OmniNudgeError | None = None
    try:
        await RedditAccess(services, feature).call(
            sender.id,
            lambda token: feature.client.compose(
                token, to=recipient.username, subject=subject, text=body
            ),
        )
        outcome: delivery.DeliveryInput = delivery.RelaySucceeded(fullname="")
    except OmniNudgeError as exc:
        error = exc
        outcome = delivery.RelayFailed(reason=exc.code, retry_at=_retry_at(services, state, exc))
    decision = delivery.handle(state, outcome, services.clock())
    for effect in decision.effects:
        if isinstance(effect, delivery.PersistDeliveries):
            await services.storage.messages.set_deliveries(effect.records)
            await _receipt(services, hub, message, recipient, effect)
    assert feature.worker is not None
    step: migration.MigrationInput | None = None
    if error is not None:
        step = migration.RelayFailed(error.code)
    elif invite_token is not None:
        step = migration.InviteSent(invite_token)
    if step is not None:
        try:
            await feature.worker.feed(conversation.id, step)
        except ProtocolError as exc:
            # The contact joined meanwhile: the migration has moved past relays.
            logger.info("relay outcome not fed to migration %s: %s", conversation.id, exc.code)
    return decision.state, error


def _retry_at(
    services: Services, state: delivery.RecipientDelivery, error: OmniNudgeError
) -> datetime | None:
    """When to try a failed relay again: only after a rate limit or an outage, and at
    most ``RELAY_ATTEMPTS`` times in all (None: give up)."""
    if state.relay_failures + 1 >= RELAY_ATTEMPTS:
        return None
    if isinstance(error, RateLimited):
        return max(error.retry_at, services.clock())
    if isinstance(error, Unavailable):
        return services.clock() + timedelta(seconds=RELAY_RETRY_S)
    return None  # the recipient refuses, or does not exist: retrying cannot help


async def _receipt(
    services: Services,
    hub: Hub,
    message: Message,
    recipient: User,
    effect: delivery.PersistDeliveries,
) -> None:
    """Tell the sender (all their devices, via their stream) how the relay went."""
    status = effect.records[-1].status
    payload = codec.default_codec().event_payload(
        wire.ReceiptFrame(
            seq=0,
            message_id=message.id,
            user_id=recipient.id,
            status=wire.ReceiptStatus(status.value),
        )
    )
    events = await services.storage.events.append(
        [NewEvent(user_id=message.sender_id, kind=EventKind.RECEIPT, payload=payload)]
    )
    await hub.announce(events)


async def _retry_relays(
    services: Services,
    hub: Hub,
    feature: RedditFeature,
    conversation: Conversation,
    recipient: User,
    message: Message,
    state: delivery.RecipientDelivery,
) -> None:
    """Feed ``RelayRetryDue`` at each deadline the delivery machine sets (in process:
    a restart forgets pending retries; the message stays ``relay_failed``)."""
    while (deadline := delivery.next_deadline(state)) is not None:
        await asyncio.sleep(max(0.0, (deadline - services.clock()).total_seconds()))
        decision = delivery.handle(state, delivery.RelayRetryDue(), services.clock())
        state = decision.state
        if not any(isinstance(e, delivery.RelayToReddit) for e in decision.effects):
            continue
        state, _ = await _relay(services, hub, feature, conversation, recipient, message, state)


async def _ensure_invitation(
    services: Services, conversation: Conversation, sender: User, recipient: User, token: str
) -> None:
    invitations = services.storage.invitations
    try:
        await invitations.get(token)
        return
    except NotFound:
        pass
    with contextlib.suppress(Conflict):  # created by a concurrent relay
        await invitations.create(
            Invitation(
                token=token,
                conversation_id=conversation.id,
                inviter_id=sender.id,
                reddit_username=recipient.username,
                created_at=services.clock(),
            )
        )
