"""``omninudge bench``'s options: the scenarios and each one's defaults."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["SCENARIOS", "BenchOptions", "Scenario"]

Scenario = Literal["pairs", "latency", "idle", "fanout", "offline"]
SCENARIOS: tuple[Scenario, ...] = ("pairs", "latency", "idle", "fanout", "offline")

# Each scenario's defaults, applied where the caller left an option at None.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "pairs": {"pairs": 64, "duration_s": 10.0},
    "latency": {"pairs": 16, "duration_s": 10.0, "rate": 1000.0},
    "fanout": {"pairs": 1, "devices": 16, "duration_s": 10.0},
    "offline": {"pairs": 1, "messages": 10_000},
    "idle": {"connections": 1000, "hold_s": 5.0},
}


@attrs.frozen
class BenchOptions:
    scenario: Scenario = "pairs"
    url: str | None = None  # None: start a server (embedded default or DATABASE_URL)
    pairs: int | None = None
    messages: int | None = None  # in all; with duration_s, whichever ends first
    duration_s: float | None = None
    rate: float | None = None  # msgs/s in all (fixed rate); None: as fast as possible
    window: int = 4
    devices: int | None = None  # fanout: devices of the one recipient
    connections: int | None = None  # idle
    users: int | None = None  # idle: accounts the connections are spread over
    hold_s: float | None = None  # idle
    body_bytes: int = 200
    # One lean process drives ~26,000 msg/s at 0.036 ms of CPU per message against a
    # server that answers at once (0.065 ms paced at 5,000/s): on 2 cores the server is
    # the limit long before it. A second process costs more CPU per message (less
    # batching per read) and takes it from the server.
    processes: int = 1
    group_commit: bool = True
    drain_s: float = 15.0
    progress: bool = True

    def resolved(self) -> BenchOptions:
        defaults = _DEFAULTS[self.scenario]
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.scenario in ("pairs", "fanout") and self.messages is not None:
            changes.pop("duration_s", None)
        return attrs.evolve(self, **changes)
