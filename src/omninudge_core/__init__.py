"""OmniNudge's Sans-I/O core: models, the wire codec, state machines, policies and ports.

Nothing here performs I/O, reads a clock or draws randomness. Feed a machine its state,
an event and the current time; it returns ``Decision(state, effects)`` and the caller
performs the effects::

    from omninudge_core import delivery
    decision = delivery.handle(state, delivery.DeviceAcked("phone"), now)

The state machines are modules: ``delivery``, ``session``, ``slideshow`` and
``migration``; the pure policies live in ``omninudge_core.policies``; the ports
(``typing.Protocol``) in ``omninudge_core.ports``.
"""

from omninudge_core import delivery, errors, migration, models, ports, session, slideshow, wire
from omninudge_core.codec import Codec, default_codec, make_converter
from omninudge_core.decision import Decision

__all__ = [
    "Codec",
    "Decision",
    "default_codec",
    "delivery",
    "errors",
    "make_converter",
    "migration",
    "models",
    "ports",
    "session",
    "slideshow",
    "wire",
]
