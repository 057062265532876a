"""What every state machine's ``handle`` returns: the new state and the effects.

The shell performs the effects (typed, frozen classes named for the I/O they
describe: ``PersistMessage``, ``PushToDevice``, ``WakeAt``...) and feeds results back
as new inputs. Effects are plain data; nothing here does anything.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

__all__ = ["Decision", "TransitionRow"]

S = TypeVar("S")
E = TypeVar("E")


@attrs.frozen
class Decision(Generic[S, E]):
    state: S
    effects: tuple[E, ...] = ()


@attrs.frozen
class TransitionRow:
    """One row of a machine's transition table, for generated docs (so they cannot drift)."""

    state: str
    input: str
    next_states: str
    rule: str

    def markdown(self) -> str:
        return f"| {self.state} | {self.input} | {self.next_states} | {self.rule} |"
