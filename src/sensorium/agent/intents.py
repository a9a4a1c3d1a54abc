"""Commands and automations in plain language → intents, resolved against the registry.

"set the living room to 72 degrees" → ``{action: set, target: living room, parameters:
{temperature: 72 °F → 22.2 °C}}`` → the actuators in that room (registry), else the devices in
that room that report the field (telemetry tags) → a device command over MQTT. Several matching
devices, risky actions (unlock, open) and values outside the device's range need a confirmation.

"turn on the hallway light when motion is detected after 10 pm" → a draft
:class:`~sensorium.automations.model.Automation` (telemetry trigger, time condition, command
action), shown for confirmation and then saved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from sensorium.agent.parser import SETPOINT, NameFinder, normalise
from sensorium.agent.plan import convert
from sensorium.agent.vocabulary import Actuator, Vocabulary, norm

RISKY = {"unlock": "unlocking a door", "open": "opening something"}
#: Device classes people name, and the words that name them.
CLASSES = {"light": ("light", "lights", "lamp", "lamps", "bulb"), "lock": ("lock", "door lock"),
           "door": ("door", "garage door", "front door", "back door"), "thermostat": ("thermostat", "heating", "heater", "ac", "air conditioning"),
           "plug": ("plug", "socket", "outlet"), "fan": ("fan",), "blind": ("blind", "blinds", "shutter", "shutters")}
#: Plausible set points, in the stored unit, when the device says nothing.
DEFAULT_RANGES = {"temperature": (5.0, 35.0), "humidity": (20.0, 80.0)}
_VERBS = (r"(set|turn\s+on|turn\s+off|switch\s+on|switch\s+off|turn|switch|unlock|lock|open|close|shut|dim|brighten|"
          r"activate|deactivate|enable|disable|start|stop|raise|lower|heat|cool|make)")


@dataclass
class Intent:
    action: str  # set, turn_on, turn_off, lock, unlock, open, close
    target: str  # the words naming it
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "parameters": self.parameters}


@dataclass
class Resolved:
    devices: list[dict[str, Any]]  # [{device_id, actuator_id, name, room}]
    command: str
    params: dict[str, Any]
    confirm_reasons: list[str]
    decline: str | None = None


def parse_command(text: str) -> Intent | None:
    t = normalise(text)
    t = re.sub(r"^(?:please|could\s+you|can\s+you|would\s+you)\s+", "", t)
    m = SETPOINT.match(t)
    if m:
        target = m.group("target") or m.group("target2")
        num, unit = float(m.group("value")), re.sub(r"\s+", " ", m.group("unit") or "").strip()
        fld = "temperature"
        if unit in ("%", "percent") or re.search(r"\bhumidity\b", target):
            fld = "humidity" if re.search(r"\bhumidity\b", target) else "level"
        if re.search(r"\b(?:light|lamp|brightness|blind|blinds)\b", target):
            fld = "level"
        target = re.sub(r"\b(?:temperature|thermostat|humidity|brightness|level)\b", " ", target).strip()
        given_unit = None
        if unit in ("f", "°f", "fahrenheit") or unit.endswith("fahrenheit") or unit.endswith(" f"):
            given_unit = "degF"
        elif unit in ("c", "°c", "celsius") or unit.endswith("celsius") or unit.endswith(" c"):
            given_unit = "degC"
        elif unit.startswith("degree") and fld == "temperature":
            given_unit = "degF" if num > 40 else "degC"
        elif fld in ("humidity", "level"):
            given_unit = "%"
        notes = []
        if unit.startswith("degree") and unit in ("degree", "degrees"):
            notes.append(f"'{num:g} degrees' read as {'°F' if given_unit == 'degF' else '°C'} "
                         f"({'above' if num > 40 else 'at most'} 40: {'Fahrenheit' if num > 40 else 'Celsius'})")
        return Intent("set", norm(target), {"field": fld, "value": num, "unit": given_unit}, notes)
    m = re.match(r"^(?:dim|brighten)\s+(?:the\s+)?(.+?)(?:\s+to\s+(\d+)\s*%?)?$", t)
    if m:
        return Intent("set", norm(m.group(1)), {"field": "level", "value": float(m.group(2) or (30 if t.startswith("dim") else 100)), "unit": "%"})
    m = re.match(r"^(turn|switch)\s+(on|off)\s+(?:the\s+)?(.+)$", t) or re.match(r"^(turn|switch)\s+(?:the\s+)?(.+?)\s+(on|off)$", t)
    if m:
        g = m.groups()
        onoff, target = (g[1], g[2]) if g[1] in ("on", "off") else (g[2], g[1])
        return Intent(f"turn_{onoff}", norm(target))
    m = re.match(r"^(unlock|lock|open|close|shut|activate|deactivate|enable|disable|start|stop)\s+(?:the\s+)?(.+)$", t)
    if m:
        verb = {"shut": "close", "activate": "turn_on", "enable": "turn_on", "start": "turn_on",
                "deactivate": "turn_off", "disable": "turn_off", "stop": "turn_off"}.get(m.group(1), m.group(1))
        return Intent(verb, norm(m.group(2)))
    return None


def _class_of(words: str) -> str | None:
    for cls, names in CLASSES.items():
        if any(re.search(rf"\b{re.escape(n)}\b", words) for n in names):
            return cls
    return None


def resolve(intent: Intent, vocab: Vocabulary, names: NameFinder) -> Resolved:
    """The devices an intent addresses and the command to send them."""
    notes = intent.notes
    found, rest, _ = names.find(intent.target, notes)
    rooms = [n.value for n, _, _ in found if n.tag == "room"]
    locations = [n.value for n, _, _ in found if n.tag == "location"]
    named_devices = [n.value for n, _, _ in found if n.tag == "device_id"]
    named_act = [n.value for n, _, _ in found if n.tag == "actuator"]
    cls = _class_of(intent.target)
    acts: list[Actuator] = []
    if named_act:
        acts = [a for a in vocab.actuators if a.actuator_id in named_act]
    elif vocab.actuators and (rooms or named_devices or cls):
        acts = [a for a in vocab.actuators
                if (not rooms or a.room in rooms) and (not locations or a.location in locations)
                and (not named_devices or a.device_id in named_devices)
                and (cls is None or _class_of(norm(a.name) + " " + " ".join(a.capabilities)) == cls
                     or cls in (a.attributes.get("class"), a.attributes.get("type")))]
        if intent.action == "set" and intent.parameters.get("field") == "temperature" and cls is None:
            acts = [a for a in acts if _class_of(norm(a.name)) == "thermostat" or "set_temperature" in a.capabilities
                    or "set" in a.capabilities]
    params: dict[str, Any] = {}
    command = intent.action
    reasons: list[str] = []
    devices: list[dict[str, Any]] = []
    if acts:
        for a in acts:
            if a.capabilities and not _capable(a, intent):
                return Resolved([], command, {}, [], f"{a.name} cannot {intent.action.replace('_', ' ')} "
                                f"(it can: {', '.join(a.capabilities)}).")
            devices.append({"device_id": a.device_id, "actuator_id": a.actuator_id, "name": a.name, "room": a.room})
    elif intent.action == "set" and intent.parameters.get("field") in ("temperature", "humidity") and (rooms or named_devices):
        fld = intent.parameters["field"]
        # no actuator in the registry: the devices in that room that report the field
        for dev, info in sorted(vocab.devices.items()):
            ms = set(filter(None, info.get("measurements", "").split(",")))
            has = any(fld in vocab.columns.get(m, {}) for m in ms)
            if has and ((rooms and info.get("room") in rooms) or dev in named_devices) and (
                    not locations or info.get("location") in locations):
                devices.append({"device_id": dev, "actuator_id": None, "name": info.get("name", dev), "room": info.get("room")})
        if devices:
            notes.append("no actuator in the registry: matched the devices in that room that report "
                         f"{fld} (by their telemetry tags)")
    elif named_devices:
        devices = [{"device_id": d, "actuator_id": None, "name": d, "room": vocab.devices.get(d, {}).get("room")} for d in named_devices]
    if not devices:
        what = f"'{intent.target}'"
        known = ", ".join(a.name for a in vocab.actuators[:10]) or "none in the registry"
        return Resolved([], command, {}, [], f"I found no device I can command for {what}. Actuators: {known}.")
    if intent.action == "set":
        fld = intent.parameters["field"]
        value = float(intent.parameters["value"])
        given = intent.parameters.get("unit")
        dev_unit = None
        for a in acts:
            dev_unit = a.attributes.get("unit") or dev_unit
        dev_unit = dev_unit or vocab.unit(fld) or given
        if fld == "temperature" and given in ("degC", "degF") and dev_unit in ("degC", "degF"):
            conv = round(convert(value, given, dev_unit), 1)
            if given != dev_unit:
                notes.append(f"{value:g} {'°F' if given == 'degF' else '°C'} = {conv:g} {'°C' if dev_unit == 'degC' else '°F'} (the device's unit)")
            value = conv
        lo, hi = DEFAULT_RANGES.get(fld, (0.0, 100.0))
        for a in acts:
            lo = float(a.attributes.get("min", lo))
            hi = float(a.attributes.get("max", hi))
        if not lo <= value <= hi:
            reasons.append(f"{value:g} is outside the usual range {lo:g}..{hi:g}")
        command = "set"
        params = {fld: value, "unit": dev_unit}
    if intent.action in RISKY:
        reasons.append(RISKY[intent.action] + " is a risky action")
    if len(devices) > 1:
        reasons.append(f"{len(devices)} devices match: {', '.join(d['device_id'] for d in devices)}")
    return Resolved(devices, command, params, reasons)


def _capable(a: Actuator, intent: Intent) -> bool:
    caps = set(a.capabilities)
    want = {intent.action}
    if intent.action == "set":
        want |= {"set", f"set_{intent.parameters.get('field')}"}
    if intent.action in ("turn_on", "turn_off"):
        want |= {"on_off", "switch", "turn_on_off"}
    if intent.action in ("lock", "unlock"):
        want |= {"lock"}
    if intent.action in ("open", "close"):
        want |= {"open_close"}
    return bool(caps & want)


# -- automations --------------------------------------------------------------------------------------
def parse_automation(text: str, vocab: Vocabulary, names: NameFinder) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """(an automation definition, notes, why not)."""
    t = normalise(text)
    notes: list[str] = []
    t = re.sub(r"^(?:please\s+)?(?:create|add|make|set\s+up)\s+(?:an?\s+)?(?:automation|rule|routine)\s+(?:to|that|which)?\s*", "", t)
    # condition on time of day
    cond: dict[str, Any] | None = None
    tod = r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
    m = re.search(r"\bbetween\s+" + tod + r"\s+and\s+" + tod + r"\b", t)
    if m:
        cond = {"kind": "time", "after": _hm(m.group(1), m.group(2), m.group(3)), "before": _hm(m.group(4), m.group(5), m.group(6))}
        t = (t[:m.start()] + t[m.end():]).strip()
    else:
        m = re.search(r"\b(?:after|past)\s+" + tod + r"\b", t)
        if m:
            after = _hm(m.group(1), m.group(2), m.group(3))
            cond = {"kind": "time", "after": after, "before": "06:00" if after >= "12:00" else None}
            if cond["before"]:
                notes.append(f"'after {m.group(0).split(None, 1)[1]}' read as {after} → 06:00 (overnight)")
            t = (t[:m.start()] + t[m.end():]).strip()
        m2 = re.search(r"\bbefore\s+" + tod + r"\b", t)
        if m2:
            before = _hm(m2.group(1), m2.group(2), m2.group(3))
            cond = (cond or {"kind": "time"}) | {"before": before}
            t = (t[:m2.start()] + t[m2.end():]).strip()
    trigger: dict[str, Any] | None = None
    action_text = t
    sched = re.search(r"\b(?:every\s+day|daily|each\s+day|every\s+morning|every\s+evening|every\s+night)?\s*at\s+" + tod + r"(?:\s+every\s+day)?\b", t)
    m = re.search(r"\b(?:when(?:ever)?|if|once)\s+(.+)$", t)
    if m:
        cond_text, action_text = m.group(1), t[:m.start()].strip()
        if not action_text:  # "when X, turn on Y"
            parts = re.split(r"\s+(?=(?:turn|switch|set|unlock|lock|open|close)\b)", cond_text, maxsplit=1)
            if len(parts) == 2:
                cond_text, action_text = parts
        trigger, why = _trigger(cond_text, vocab, names, notes)
        if trigger is None:
            return None, notes, why
    elif sched and re.search(r"\bevery|daily|each\b", t) or (sched and cond is None):
        h, mi = _hm(sched.group(1), sched.group(2), sched.group(3)).split(":")
        trigger = {"kind": "schedule", "cron": f"{int(mi)} {int(h)} * * *"}
        action_text = (t[:sched.start()] + t[sched.end():]).strip()
    else:
        return None, notes, "I could not tell when it should run: say 'when motion is detected', 'when the temperature is above 25', or 'every day at 7 am'."
    intent = parse_command(action_text)
    if intent is None:
        return None, notes, f"I could not tell what it should do: '{action_text}'."
    res = resolve(intent, vocab, names)
    notes += intent.notes
    if res.decline:
        return None, notes, res.decline
    if len(res.devices) > 1:
        return None, notes, "More than one device matches: " + ", ".join(d["device_id"] for d in res.devices) + "; name one."
    dev = res.devices[0]
    if trigger["kind"] == "telemetry" and not trigger["tags"] and dev.get("room"):
        trigger["tags"] = {"room": dev["room"]}  # "when motion is detected": where the device is
        notes.append(f"the trigger watches the {norm(dev['room'])}, where {dev['name']} is")
    name = "agent-" + re.sub(r"[^a-z0-9]+", "-", f"{intent.action} {dev['device_id']} {trigger['kind']}").strip("-")[:80]
    name += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    definition = {
        "name": name,
        "description": text.strip()[:500],
        "cooldown": "5m",
        "trigger": trigger,
        "conditions": [cond] if cond else [],
        "actions": [{"kind": "command", "device_id": dev["device_id"], "command": res.command, "params": res.params}],
    }
    return definition, notes, None


def _hm(h: str, m: str | None, ampm: str | None) -> str:
    hh = int(h) % 24
    if ampm:
        hh = int(h) % 12 + (12 if ampm.startswith("p") else 0)
    return f"{hh:02d}:{int(m or 0):02d}"


def _trigger(text: str, vocab: Vocabulary, names: NameFinder, notes: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    found, rest, _ = names.find(text, notes)
    tags = {n.tag: n.value for n, _, _ in found if n.tag in ("room", "location", "device_id")}
    fa = vocab.field_aliases()
    fld = next((fa[w] for w in sorted(fa, key=len, reverse=True) if re.search(rf"\b{re.escape(w)}\b", rest)), None)
    if re.search(r"\balert\b|\balarm\b", text):
        rule = re.search(r"\balert\s+([a-z0-9_.-]+)\s+fires", text)
        return {"kind": "alert", "rule": rule.group(1) if rule else "*", "state": "firing"}, None
    if fld is None:
        return None, f"I could not tell what should trigger it: '{text}'."
    ms = vocab.fields().get(fld, [])
    if not ms:
        return None, f"No measurement has a field {fld}."
    trig: dict[str, Any] = {"kind": "telemetry", "measurement": ms[0] if len(ms) == 1 else "*", "field": fld, "tags": tags}
    if fld == "motion" or re.search(r"\bdetected\b|\bmoves?\b", text):
        trig["above"] = 0.5
        return trig, None
    m = THRESH_AUTOMATION.search(text)
    if not m:
        return None, f"Say when {fld} should trigger it (above or below a value)."
    op = m.group(1)
    val = float(m.group(2))
    unit = m.group(3) or ""
    if fld == "temperature" and ("f" in unit) and vocab.unit("temperature") == "degC":
        val = round(convert(val, "degF", "degC"), 2)
        notes.append(f"threshold converted to {val:g} °C")
    trig["above" if op in ("above", "over", "exceeds", "higher than", "more than") else "below"] = val
    return trig, None


THRESH_AUTOMATION = re.compile(r"\b(above|over|exceeds|higher\s+than|more\s+than|below|under|lower\s+than|less\s+than)\s+(-?\d+(?:\.\d+)?)\s*(°c|°f|degrees?\s*f|degrees?\s*c|degrees?|%)?")


__all__ = ["Intent", "Resolved", "parse_automation", "parse_command", "resolve"]
