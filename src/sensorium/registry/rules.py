"""The registry's vocabulary: kinds, relation types, which kinds each relation may join, and what
each relation means for dependencies (impact analysis) and containment (access).

Read ``src -[REL]-> dst`` as a sentence: ``sensor-1 ATTACHED_TO dev-1``, ``dev-1 COMMUNICATES_WITH
gw-1`` (dev-1 sends through gw-1), ``kitchen PART_OF home``, ``alice OWNS home``.
"""

from __future__ import annotations

import re

KINDS: tuple[str, ...] = (
    "user", "location", "room", "device", "sensor", "actuator", "ai_model", "service",
)
#: URL / SQL spelling of each kind (``/api/v1/registry/devices``)
PLURAL: dict[str, str] = {k: k + "s" for k in KINDS}
BY_PLURAL: dict[str, str] = {v: k for k, v in PLURAL.items()}

USER_ROLES: tuple[str, ...] = ("admin", "user", "guest")
DEVICE_STATUSES: tuple[str, ...] = ("active", "inactive", "unregistered")

_THINGS = frozenset({"device", "sensor", "actuator", "ai_model", "service"})
_PLACES = frozenset({"location", "room"})

#: relation type → (allowed source kinds, allowed destination kinds)
RELATIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "OWNS": (frozenset({"user"}), _PLACES | _THINGS),
    "HAS_ACCESS": (frozenset({"user"}), _PLACES | _THINGS),
    "LOCATED_IN": (frozenset({"device", "sensor", "actuator", "service", "user"}), _PLACES),
    "PART_OF": (frozenset({"room", "location", "device", "service"}), frozenset({"location", "room", "device", "service"})),
    "ATTACHED_TO": (frozenset({"sensor", "actuator", "device"}), frozenset({"device"})),
    "USES": (frozenset({"user", "device", "ai_model", "service"}), _THINGS),
    "COMMUNICATES_WITH": (frozenset({"device", "service"}), frozenset({"device", "service"})),
    "INTERACTS_WITH": (frozenset({"user"}), _THINGS | frozenset({"user"})),
    "PROCESSES_DATA_FROM": (frozenset({"ai_model", "service"}), frozenset({"sensor", "device", "ai_model", "service"})),
    "CONTROLS": (frozenset({"user", "service", "ai_model", "device", "actuator"}), frozenset({"device", "actuator"})),
}
RELATION_TYPES: tuple[str, ...] = tuple(RELATIONS)

#: PART_OF between kinds that make sense together (a room in a location, a location in a
#: location, a device module in a device, a service in a service)
PART_OF_PAIRS = frozenset({
    ("room", "location"), ("location", "location"), ("room", "room"),
    ("device", "device"), ("service", "service"),
})

#: Impact analysis: for these relations ``src`` depends on ``dst`` (a failure of dst reaches src)
DEPENDS_ON_DST = frozenset({"COMMUNICATES_WITH", "ATTACHED_TO", "PART_OF", "PROCESSES_DATA_FROM"})
#: ... and for these ``dst`` depends on ``src`` (what a controller controls fails with it)
DEPENDS_ON_SRC = frozenset({"CONTROLS"})
IMPACT_RELATIONS = DEPENDS_ON_DST | DEPENDS_ON_SRC

#: Containment (what access to a place or device covers): ``src`` is inside ``dst``
CONTAINED_IN = frozenset({"LOCATED_IN", "PART_OF", "ATTACHED_TO"})
#: How a user reaches what is theirs
GRANTS = frozenset({"OWNS", "HAS_ACCESS"})

#: Path finding by latency: links that carry data or commands (direction ignored)
LINK_RELATIONS = frozenset({"COMMUNICATES_WITH", "ATTACHED_TO", "PROCESSES_DATA_FROM", "CONTROLS"})

#: A registry id: a slug of letters, digits and ``_ . : @ + ~ -`` (no spaces, no ``/``), ≤ 128
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+~-]{0,127}")


def check_relation(src_kind: str, rel: str, dst_kind: str) -> str | None:
    """Why ``src_kind -[rel]-> dst_kind`` is not allowed, or None when it is."""
    if rel not in RELATIONS:
        return f"unknown relation {rel!r} (one of {', '.join(RELATION_TYPES)})"
    srcs, dsts = RELATIONS[rel]
    if src_kind not in srcs:
        return f"{rel} cannot start at a {src_kind} (only at: {', '.join(sorted(srcs))})"
    if dst_kind not in dsts:
        return f"{rel} cannot end at a {dst_kind} (only at: {', '.join(sorted(dsts))})"
    if rel == "PART_OF" and (src_kind, dst_kind) not in PART_OF_PAIRS:
        pairs = ", ".join(f"{a}→{b}" for a, b in sorted(PART_OF_PAIRS))
        return f"PART_OF cannot join a {src_kind} to a {dst_kind} (only {pairs})"
    return None


def kind_of_path(segment: str) -> str | None:
    """``devices`` → ``device``; None for anything else."""
    return BY_PLURAL.get(segment)


__all__ = [
    "BY_PLURAL",
    "CONTAINED_IN",
    "DEPENDS_ON_DST",
    "DEPENDS_ON_SRC",
    "DEVICE_STATUSES",
    "GRANTS",
    "ID_RE",
    "IMPACT_RELATIONS",
    "KINDS",
    "LINK_RELATIONS",
    "PART_OF_PAIRS",
    "PLURAL",
    "RELATIONS",
    "RELATION_TYPES",
    "USER_ROLES",
    "check_relation",
    "kind_of_path",
]
