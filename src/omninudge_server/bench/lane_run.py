"""The generator's bookkeeping of one lane (``LaneRun``): what was sent when, how each
send was answered, what each recipient got, and the worker's totals (``Counts``).

Cost per message is the point (the generator shares the machine with the server):
frames go to plain callbacks (``wsclient``), each is parsed once with orjson, a
``send`` is the lane's pre-built bytes around the message number, and the
bookkeeping is arrays indexed by that number (send instant, answer, deliveries per
recipient) rather than per-message objects.
"""

from __future__ import annotations

import contextlib
import time
from array import array
from typing import TYPE_CHECKING, Any

import orjson

from omninudge_server.bench.setup import Lane
from omninudge_server.bench.wsclient import Payload, TextHandler, WebSocketClient

if TYPE_CHECKING:
    from omninudge_server.bench.load import WorkerPlan  # load imports this module

__all__ = ["ACCEPTED", "PENDING", "REFUSED", "Conn", "Counts", "LaneRun"]

# A send's answer, by message number (``LaneRun.answers``).
PENDING, ACCEPTED, REFUSED = 0, 1, 2


def _now() -> int:
    return time.monotonic_ns()


class Counts:
    """The worker's totals; ``unanswered`` and ``missing`` make "done?" O(1)."""

    __slots__ = (
        "ack_ns",
        "acked",
        "deliver_ns",
        "delivered",
        "duplicates",
        "errors",
        "last_ack",
        "last_answer",
        "last_delivery",
        "missing",
        "pacing_lag_ns",
        "redelivered",
        "sent",
        "unanswered",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.delivered = 0
        self.duplicates = 0
        self.redelivered = 0
        self.unanswered = 0  # sends without their ``sent`` or error yet
        self.missing = 0  # (accepted message, recipient device) pairs not delivered yet
        self.errors: dict[str, int] = {}
        self.ack_ns = array("q")
        self.deliver_ns = array("q")
        self.pacing_lag_ns = array("q")  # mode "rate": actual send - scheduled send
        self.last_delivery = 0
        self.last_ack = 0
        self.last_answer = 0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class Conn:
    """One WebSocket: the highest ``seq`` seen and the highest acknowledged."""

    __slots__ = ("ack_every", "acked", "client", "counts", "max_seq")

    def __init__(self, counts: Counts, ack_every: int) -> None:
        self.counts = counts
        self.ack_every = ack_every
        self.client: WebSocketClient | None = None
        self.max_seq = 0
        self.acked = 0

    def fresh(self, seq: Any) -> bool:
        """False for a replayed event (seq already seen); acks every ``ack_every``."""
        if seq is None:
            return True
        if seq <= self.max_seq:
            self.counts.redelivered += 1
            return False
        self.max_seq = seq
        if seq - self.acked >= self.ack_every:
            self.ack()
        return True

    def ack(self) -> None:
        if self.max_seq > self.acked and self.client is not None:
            self.acked = self.max_seq
            self.client.send(b'{"type":"ack","seq":%d}' % self.max_seq)


class LaneRun:
    """One lane: what was sent when, how it was answered, what each recipient got.
    Message ``n`` is ``client_msg_id`` ``"m<n>"``; every array is indexed by ``n``."""

    __slots__ = (
        "answers",
        "counts",
        "deadline",
        "lane",
        "limit",
        "prefix",
        "received",
        "refill",
        "sender",
        "sent_ns",
        "stop_sending",
        "suffix",
    )

    def __init__(self, lane: Lane, plan: WorkerPlan, counts: Counts) -> None:
        self.lane = lane
        self.counts = counts
        self.refill = plan.mode == "max"  # each answer frees a window slot
        self.limit = plan.messages_per_lane if plan.messages_per_lane is not None else 1 << 62
        self.prefix = (
            f'{{"type":"send","conversation_id":"{lane.conversation_id}","client_msg_id":"m'
        ).encode()
        self.suffix = ('","envelope":' + lane.envelope_json + "}").encode()
        self.sender = Conn(counts, plan.ack_every)
        self.sent_ns = array("q")
        self.answers = bytearray()
        self.received = [bytearray() for _ in lane.recipients]  # deliveries, saturating
        self.stop_sending = False
        self.deadline = 1 << 62

    def can_send(self, now: int) -> bool:
        return not self.stop_sending and len(self.sent_ns) < self.limit and now < self.deadline

    def send_next(self, now: int) -> None:
        assert self.sender.client is not None
        number = len(self.sent_ns)
        self.sent_ns.append(now)
        self.answers.append(PENDING)
        for got in self.received:
            got.append(0)
        self.counts.sent += 1
        self.counts.unanswered += 1
        self.sender.client.send(b"%b%d%b" % (self.prefix, number, self.suffix))

    def _number(self, client_msg_id: Any) -> int:
        """The message number of one of our ids, else -1."""
        if isinstance(client_msg_id, str) and client_msg_id[:1] == "m":
            with contextlib.suppress(ValueError):
                number = int(client_msg_id[1:])
                if 0 <= number < len(self.sent_ns):
                    return number
        return -1

    def on_sender_text(self, data: Payload) -> None:
        frame = orjson.loads(data)
        if not self.sender.fresh(frame.get("seq")):
            return
        kind = frame.get("type")
        if kind == "sent":
            self._answered(frame.get("client_msg_id"), ACCEPTED)
        elif kind == "error":
            self.counts.error(str(frame.get("code")))
            self._answered(frame.get("ref"), REFUSED)

    def _answered(self, client_msg_id: Any, outcome: int) -> None:
        number = self._number(client_msg_id)
        if number < 0 or self.answers[number] != PENDING:
            return
        counts = self.counts
        now = _now()
        self.answers[number] = outcome
        counts.unanswered -= 1
        counts.last_answer = now
        if outcome == ACCEPTED:
            counts.acked += 1
            counts.last_ack = now
            counts.ack_ns.append(now - self.sent_ns[number])
            counts.missing += sum(1 for got in self.received if not got[number])
        if self.refill and self.can_send(now):
            self.send_next(now)

    def recipient_handler(self, index: int, conn: Conn) -> TextHandler:
        def on_text(data: Payload) -> None:
            frame = orjson.loads(data)
            if not conn.fresh(frame.get("seq")):
                return
            kind = frame.get("type")
            if kind == "message":
                self._delivered(index, frame["message"].get("client_msg_id"))
            elif kind == "error":
                self.counts.error(str(frame.get("code")))

        return on_text

    def _delivered(self, index: int, client_msg_id: Any) -> None:
        counts = self.counts
        number = self._number(client_msg_id)
        if number < 0:
            counts.error("bench_unknown_message")
            return
        got = self.received[index]
        if got[number]:
            got[number] = min(255, got[number] + 1)
            counts.duplicates += 1
            return
        got[number] = 1
        now = _now()
        counts.delivered += 1
        counts.last_delivery = now
        counts.deliver_ns.append(now - self.sent_ns[number])
        if self.answers[number] == ACCEPTED:
            counts.missing -= 1

    def accepted(self) -> int:
        return self.answers.count(ACCEPTED)
