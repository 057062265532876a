"""The Reddit stand-in's private messages, and the wire helpers the stand-in shares.

``StandInMail`` is the message store behind ``/api/compose``, ``/api/comment`` and
``/message/*`` (REDDIT.md §5): every message is a ``t4`` built from a recorded one, so
its keys are Reddit's. Compose puts one message in the recipient's inbox and the
sender's sent box (one record, seen from both sides); a reply joins the root's thread.
Used by ``omninudge_adapters.reddit.testing``; not meant to be used on its own.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from starlette.responses import Response

__all__ = [
    "StandInMail",
    "StandInUser",
    "b36",
    "error_response",
    "json_errors",
    "json_response",
    "page_of",
]

_MD_HTML = '<!-- SC_OFF --><div class="md"><p>{}</p>\n</div><!-- SC_ON -->'


def b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        headers=headers,
        media_type="application/json; charset=UTF-8",
    )


def json_errors(code: str, message: str, field: str | None) -> Response:
    # Form POSTs report errors in a 200 body (REDDIT.md §5.1).
    return json_response({"json": {"errors": [[code, message, field]]}})


def error_response(status: int, message: str, **extra: object) -> Response:
    return json_response({**extra, "message": message, "error": status}, status)


def page_of(
    children: list[dict[str, Any]], query: Mapping[str, str], empty_listing: Mapping[str, Any]
) -> dict[str, Any]:
    """One Listing page of ``children`` after ``query["after"]``; ``after`` is null on
    the last page (REDDIT.md §4)."""
    limit = max(1, min(100, int(query.get("limit", "25") or 25)))
    after = query.get("after")
    start = 0
    if after:
        names = [child["data"]["name"] for child in children]
        start = names.index(after) + 1 if after in names else len(children)
    page = children[start : start + limit]
    more = start + limit < len(children)
    body: dict[str, Any] = copy.deepcopy(dict(empty_listing))
    body["data"].update(
        children=page,
        dist=len(page),
        after=page[-1]["data"]["name"] if page and more else None,
        before=None,
    )
    return body


@attrs.define
class StandInUser:
    name: str
    id: str
    created_utc: float
    accept_pms: bool = True
    whitelist_only: bool = False  # answers NOT_WHITELISTED_BY_USER_MESSAGE to strangers
    suspended: bool = False


class StandInMail:
    """The message store. ``templates`` are recorded bodies: ``t4`` (one message's data),
    ``reply`` (an ``/api/comment`` answer), ``jquery`` (compose without ``api_type``),
    ``listing`` (an empty Listing)."""

    def __init__(
        self,
        users: Mapping[str, StandInUser],
        templates: Mapping[str, Any],
        *,
        new_id: Callable[[], str],
        clock: Callable[[], float],
    ) -> None:
        self.users = users
        self.templates = templates
        self.new_id = new_id
        self.clock = clock
        self.messages: list[dict[str, Any]] = []
        self.compose_wait_s: int | None = None  # answer RATELIMIT to compose when set

    def inbox_of(self, user: str) -> list[dict[str, Any]]:
        return [m for m in reversed(self.messages) if m["dest"].lower() == user.lower()]

    def unread_of(self, user: str) -> list[dict[str, Any]]:
        return [m for m in self.inbox_of(user) if m["new"]]

    def mark_read(self, fullnames: set[str]) -> None:
        for message in self.messages:
            if message["name"] in fullnames:
                message["new"] = False

    def mark_all_read(self, user: str) -> None:
        self.mark_read({m["name"] for m in self.inbox_of(user)})

    def box(self, user: str, box: str, query: Mapping[str, str]) -> Response:
        """``/message/{inbox,unread,sent}`` newest first; ``messages`` as threads."""
        me = user.lower()
        if box == "inbox":
            items = self.inbox_of(user)
        elif box == "unread":
            items = self.unread_of(user)
        elif box == "sent":
            items = [m for m in reversed(self.messages) if m["author"].lower() == me]
        else:
            items = [
                self._thread(root)
                for root in reversed(self.messages)
                if root["first_message_name"] is None
                and me in (root["author"].lower(), root["dest"].lower())
            ]
        children = [{"kind": "t4", "data": m} for m in items]
        return json_response(page_of(children, query, self.templates["listing"]))

    def _thread(self, root: dict[str, Any]) -> dict[str, Any]:
        # /message/messages: the root with the rest of the thread nested, oldest first.
        thread = copy.deepcopy(root)
        replies = [
            {"kind": "t4", "data": m}
            for m in self.messages
            if m["first_message_name"] == root["name"]
        ]
        if replies:
            nested = copy.deepcopy(self.templates["listing"])
            nested["data"].update(children=replies, dist=None)
            thread["replies"] = nested
        return thread

    def _new_message(
        self, author: str, dest: str, subject: str, text: str, parent: dict[str, Any] | None
    ) -> dict[str, Any]:
        message_id = self.new_id()
        message: dict[str, Any] = copy.deepcopy(self.templates["t4"])
        author_user = self.users[author.lower()]
        now = float(int(self.clock()))  # Reddit's created_utc is whole seconds
        root = None
        if parent is not None:
            root = parent["first_message_name"] or parent["name"]
        message.update(
            id=message_id,
            name=f"t4_{message_id}",
            author=author_user.name,
            author_fullname=f"t2_{author_user.id}",
            dest=dest,
            subject=subject,
            body=text,
            body_html=_MD_HTML.format(html.escape(text)),
            created=now,
            created_utc=now,
            new=True,
            replies="",
            first_message=int(root[3:], 36) if root else None,
            first_message_name=root,
            parent_id=parent["name"] if parent is not None else None,
        )
        self.messages.append(message)
        return message

    def compose(self, sender: str, form: Mapping[str, str]) -> Response:
        """``POST /api/compose``: errors in a 200 ``json.errors`` body, as Reddit does."""
        if form.get("api_type") != "json":
            return json_response(self.templates["jquery"])  # the legacy answer (REDDIT.md §1)
        to = form.get("to", "").removeprefix("/").removeprefix("u/")
        subject, text = form.get("subject", ""), form.get("text", "")
        checks = [
            (not to, ("NO_USER", "please enter a username", "to")),
            (not subject, ("NO_SUBJECT", "please enter a subject", "subject")),
            (not text, ("NO_TEXT", "we need something here", "text")),
            (len(subject) > 100, ("TOO_LONG", "this is too long (max: 100)", "subject")),
            (len(text) > 10000, ("TOO_LONG", "this is too long (max: 10000)", "text")),
        ]
        for failed, (code, message, field) in checks:
            if failed:
                return json_errors(code, message, field)
        recipient = self.users.get(to.lower())
        if recipient is None or recipient.suspended:
            return json_errors("USER_DOESNT_EXIST", "that user doesn't exist", "to")
        if recipient.whitelist_only or not recipient.accept_pms:
            return json_errors(
                "NOT_WHITELISTED_BY_USER_MESSAGE", "can't send a message to that user", "to"
            )
        if self.compose_wait_s is not None:
            wait = f"You are doing that too much. Try again in {self.compose_wait_s} seconds."
            return json_errors("RATELIMIT", wait, "ratelimit")
        self._new_message(sender, recipient.name, subject, text, None)
        return json_response({"json": {"errors": []}})

    def comment(self, sender: str, form: Mapping[str, str]) -> Response:
        """``POST /api/comment`` on a ``t4_``: the reply joins the thread and is returned."""
        parent = next((m for m in self.messages if m["name"] == form.get("thing_id")), None)
        me = sender.lower()
        if parent is None or me not in (parent["author"].lower(), parent["dest"].lower()):
            return error_response(403, "Forbidden")
        text = form.get("text", "")
        if not text:
            return json_errors("NO_TEXT", "we need something here", "text")
        other = parent["dest"] if parent["author"].lower() == me else parent["author"]
        subject = parent["subject"]
        subject = subject if subject.startswith("re: ") else f"re: {subject}"
        message = self._new_message(sender, other, subject, text, parent)
        body = copy.deepcopy(self.templates["reply"])
        body["json"]["data"]["things"] = [{"kind": "t4", "data": copy.deepcopy(message)}]
        return json_response(body)
