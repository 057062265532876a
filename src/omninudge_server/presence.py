"""Presence on connect and disconnect, through the Presence port and the hub.

Who may see whom is ``policies.blocking.may_see_presence`` (no block either way, and
the subject's ``presence_visible``). The audience is the user's contacts: the other
participants of their most recent conversations (at most ``MAX_CONTACTS``).
"""

from __future__ import annotations

import logging

from omninudge_core import codec, wire
from omninudge_core.models import User
from omninudge_core.policies import blocking
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["connected", "contacts", "disconnected", "refresh"]

logger = logging.getLogger("omninudge.presence")

MAX_CONTACTS = 100


def _ttl(services: Services) -> float:
    # Three ping intervals: a live connection refreshes on every ping tick.
    return 3 * services.settings.ws_ping_interval_s


async def contacts(services: Services, user_id: str) -> list[User]:
    page = await services.storage.conversations.list_for_user(
        user_id, before=None, limit=MAX_CONTACTS
    )
    others = [view.conversation.other(user_id) for view in page.items]
    found = await services.storage.users.get_many(others)
    return [found[o] for o in others if o in found]


async def _visible_pairs(services: Services, me: User, others: list[User]) -> list[User]:
    """The contacts with no block between them and ``me``."""
    visible = []
    for other in others:
        relation = (
            frozenset({(me.id, other.id)})
            if await services.storage.blocks.between(me.id, other.id)
            else frozenset()
        )
        if not blocking.blocked_between(relation, me.id, other.id):
            visible.append(other)
    return visible


async def _announce(services: Services, hub: Hub, user_id: str) -> None:
    me = await services.storage.users.get(user_id)
    if not me.settings.presence_visible:
        return
    info = (await services.presence.status([user_id])).get(user_id)
    if info is None:
        return
    frame = wire.PresenceFrame(user_id=user_id, online=info.online, last_seen=info.last_seen)
    payload = codec.unstructure_server_frame(frame)
    for other in await _visible_pairs(services, me, await contacts(services, user_id)):
        await hub.send_ephemeral(other.id, payload)


async def connected(services: Services, hub: Hub, user_id: str, connection_id: str) -> None:
    """Mark the connection alive, tell the user's contacts, and tell the user (on all
    their connections) the presence of the contacts they may see."""
    was = (await services.presence.status([user_id])).get(user_id)
    await services.presence.heartbeat(user_id, connection_id, _ttl(services))
    if was is None or not was.online:
        await _announce(services, hub, user_id)
    me = await services.storage.users.get(user_id)
    others = await contacts(services, user_id)
    visible = [
        o
        for o in await _visible_pairs(services, me, others)
        if blocking.may_see_presence(frozenset(), user_id, o.id, o.settings)
    ]
    statuses = await services.presence.status([o.id for o in visible])
    for other in visible:
        info = statuses.get(other.id)
        if info is None or info.online is None:
            continue
        frame = wire.PresenceFrame(user_id=other.id, online=info.online, last_seen=info.last_seen)
        await hub.send_ephemeral(user_id, codec.unstructure_server_frame(frame))


async def refresh(services: Services, user_id: str, connection_id: str) -> None:
    await services.presence.heartbeat(user_id, connection_id, _ttl(services))


async def disconnected(services: Services, hub: Hub, user_id: str, connection_id: str) -> None:
    await services.presence.disconnected(user_id, connection_id)
    info = (await services.presence.status([user_id])).get(user_id)
    if info is not None and info.online is False:
        await _announce(services, hub, user_id)
