"""An optional LLM (any OpenAI-compatible chat-completions endpoint: llama.cpp, Ollama, vLLM ...)
that works through validated tools. It never sees SQL it could write: ``query`` takes a
:class:`~sensorium.agent.plan.Plan` (validated, every name checked against the vocabulary, turned
into SQL by :func:`~sensorium.agent.plan.to_sql`), and the other tools take names that must exist.
A refused call goes back to the model as ``{"error": ...}`` and is listed in the answer. Answers
are grounded: without one successful data tool call the embedded parser answers instead; a
timeout, an HTTP error or a reply that is not the protocol falls back the same way.

Configuration: ``[agent] llm_url`` (e.g. ``http://127.0.0.1:8080/v1``), ``llm_model``,
``llm_api_key``, ``llm_timeout_s``, ``llm_max_steps``.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from sensorium.agent.plan import Plan
from sensorium.errors import SensoriumError

if TYPE_CHECKING:
    from sensorium.agent.agent import Agent
    from sensorium.agent.context import AgentContext
    from sensorium.config import AgentSettings

COMMANDS = ("set", "turn_on", "turn_off", "lock", "unlock", "open", "close")
SYSTEM = (
    "You answer questions about an IoT telemetry platform and act on its devices, ONLY through the "
    "tools. Never invent numbers: every number you state must come from a tool result. Times are UTC "
    "nanoseconds. If the tools cannot answer, say so."
)


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


_S = {"type": "string"}
TOOLS = [
    _fn("query", "Run a structured query plan (see the schema) and get the answer, the table and the SQL.",
        {"plan": {"type": "object", "description": "kind (aggregate|topk|threshold|latest|anomalies|devices), "
                  "measurements, field, aggregation, time {start_ns, end_ns}, filters {room|location|device_id: [..]}, "
                  "group_by, top_k, order, threshold {op, value, given}"}}, ["plan"]),
    _fn("list_devices", "Devices with their room and location, optionally in one room or location.",
        {"room": _S, "location": _S}, []),
    _fn("latest", "The latest value of a field, optionally in one room or on one device.",
        {"field": _S, "room": _S, "device_id": _S}, ["field"]),
    _fn("alerts", "Alerts that fired between two times (UTC ns; both optional).",
        {"start_ns": {"type": "integer"}, "end_ns": {"type": "integer"}}, []),
    _fn("history", "A field's mean per hour or day between two times, optionally in one room.",
        {"field": _S, "start_ns": {"type": "integer"}, "end_ns": {"type": "integer"}, "every": {"enum": ["hour", "day"]},
         "room": _S}, ["field", "start_ns", "end_ns"]),
    _fn("forecast", "Forecast a field's mean over the next N hours, optionally in one room.",
        {"field": _S, "hours": {"type": "integer"}, "room": _S}, ["field", "hours"]),
    _fn("send_command", "Send a command to a device. Risky or out-of-range commands come back for the user's confirmation.",
        {"device_id": _S, "command": {"enum": list(COMMANDS)}, "params": {"type": "object"}}, ["device_id", "command"]),
    _fn("draft_automation", "Draft an automation (the user confirms before it is saved).",
        {"definition": {"type": "object"}}, ["definition"]),
]


class LLMUnavailable(Exception):
    """The LLM could not be used for this question (so the embedded parser answers); ``refused``:
    the tool calls refused on the way."""

    def __init__(self, message: str, refused: list[str] | None = None) -> None:
        super().__init__(message)
        self.refused = refused or []


class Refused(Exception):
    """A tool call that is not allowed or not valid; the message goes back to the model."""


class LLMClient:
    def __init__(self, settings: AgentSettings) -> None:
        assert settings.llm_url
        self.url = settings.llm_url.rstrip("/") + "/chat/completions"
        self.model = settings.llm_model
        self.key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        self.timeout = settings.llm_timeout_s
        self.max_steps = settings.llm_max_steps

    def _chat(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            r = httpx.post(self.url, json={"model": self.model, "messages": messages, "tools": TOOLS,
                                           "tool_choice": "auto", "temperature": 0},
                           headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            raise LLMUnavailable(f"no answer from {self.url} within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise LLMUnavailable(f"cannot reach {self.url}: {exc}") from None
        if r.status_code != 200:
            raise LLMUnavailable(f"{self.url} answered {r.status_code}")
        try:
            msg = r.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMUnavailable("the reply is not an OpenAI chat-completions response") from None
        if not isinstance(msg, dict):
            raise LLMUnavailable("the reply's message is not an object")
        return msg

    def ask(self, agent: Agent, ctx: AgentContext, question: str, session_id: str | None) -> dict[str, Any]:
        tools = Tools(agent, ctx)
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        for _ in range(self.max_steps):
            try:
                msg = self._chat(messages)
            except LLMUnavailable as exc:
                exc.refused = tools.refused
                raise
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise LLMUnavailable("tool_calls is not a list")
            if not calls:
                if tools.grounded is None:
                    raise LLMUnavailable("the model answered without a successful tool call (ungrounded)", tools.refused)
                return tools.result(str(msg.get("content") or tools.grounded.get("answer", "")))
            messages.append({"role": "assistant", "content": msg.get("content"), "tool_calls": calls})
            for call in calls:
                cid, content = tools.run(call)
                messages.append({"role": "tool", "tool_call_id": cid, "content": content})
        if tools.grounded is None:
            raise LLMUnavailable(f"no grounded answer within {self.max_steps} steps", tools.refused)
        return tools.result(str(tools.grounded.get("answer", "")))


class Tools:
    """The tools, each validating its arguments against the platform's vocabulary."""

    def __init__(self, agent: Agent, ctx: AgentContext) -> None:
        self.agent = agent
        self.ctx = ctx
        self.vocab = agent.vocabulary(ctx)
        self.calls: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.grounded: dict[str, Any] | None = None
        self.pending: dict[str, Any] | None = None

    def run(self, call: Any) -> tuple[str, str]:
        cid = str(call.get("id", "")) if isinstance(call, dict) else ""
        try:
            if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                raise Refused("a tool call must be {id, type: function, function: {name, arguments}}")
            name = call["function"].get("name")
            raw = call["function"].get("arguments", "{}")
            try:
                args = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError:
                raise Refused(f"the arguments of {name} are not JSON") from None
            if not isinstance(args, dict):
                raise Refused(f"the arguments of {name} must be a JSON object")
            fn = getattr(self, f"t_{name}", None) if isinstance(name, str) and name.isidentifier() else None
            if fn is None:
                raise Refused(f"unknown tool {name!r} (tools: {', '.join(t['function']['name'] for t in TOOLS)})")
            extra = sorted(set(args) - set(inspect.signature(fn).parameters))
            if extra:
                raise Refused(f"{name} does not take {', '.join(extra)}")
            out = fn(**args)
            self.calls.append({"tool": name, "arguments": args, "ok": True})
            return cid, json.dumps(_brief(out), default=str)
        except Refused as exc:
            self.refused.append(str(exc))
            self.calls.append({"tool": call.get("function", {}).get("name") if isinstance(call, dict) and isinstance(call.get("function"), dict) else None, "ok": False, "error": str(exc)})
            return cid, json.dumps({"error": f"refused: {exc}"})
        except SensoriumError as exc:
            self.refused.append(exc.message)
            return cid, json.dumps({"error": exc.message})

    # -- validation helpers ------------------------------------------------------------------------
    def _field(self, f: Any) -> tuple[str, list[str]]:
        ms = self.vocab.fields().get(f) if isinstance(f, str) else None
        if not ms:
            raise Refused(f"unknown field {f!r} (fields: {', '.join(sorted(self.vocab.fields()))})")
        return f, ms

    def _name(self, tag: str, v: Any) -> str:
        known = set(self.vocab.names(tag))
        if not isinstance(v, str) or v not in known:
            raise Refused(f"unknown {tag} {v!r} (known: {', '.join(sorted(known)[:30])})")
        return v

    def _answer(self, plan: Plan) -> dict[str, Any]:
        out = self.agent.answer_plan(self.ctx, plan)
        if out["status"] == "answered":
            self.grounded = out
        return out

    # -- tools ---------------------------------------------------------------------------------------
    def t_query(self, plan: Any = None) -> dict[str, Any]:
        if not isinstance(plan, dict):
            raise Refused("plan must be an object")
        plan = dict(plan)
        if isinstance(plan.get("time"), dict):
            plan["time"] = {k: v for k, v in plan["time"].items() if k in ("start_ns", "end_ns")}
        try:
            p = Plan.model_validate(plan)
        except ValidationError as exc:
            raise Refused("invalid plan: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))) from None
        if p.kind in ("alerts", "forecast"):
            raise Refused("use the alerts or forecast tool for those")
        if p.kind != "anomalies" or p.field:
            if p.kind != "devices":
                f, ms = self._field(p.field)
                for m in p.measurements:
                    if m not in ms:
                        raise Refused(f"measurement {m!r} has no field {f!r} (those that do: {', '.join(ms)})")
                if not p.measurements:
                    p = p.model_copy(update={"measurements": tuple(ms)})
        for tag, vals in p.filters.items():
            for v in vals:
                self._name(tag, v)
        if p.kind == "devices" and not p.measurements:
            p = p.model_copy(update={"measurements": tuple(self.vocab.measurements)})
        if p.field:
            p = p.model_copy(update={"stored_unit": self.vocab.unit(p.field), "unit": p.unit or self.vocab.unit(p.field)})
        return self._answer(p)

    def t_list_devices(self, room: Any = None, location: Any = None) -> dict[str, Any]:
        filters = {}
        if room is not None:
            filters["room"] = (self._name("room", room),)
        if location is not None:
            filters["location"] = (self._name("location", location),)
        return self._answer(Plan(kind="devices", measurements=tuple(self.vocab.measurements), aggregation="list",
                                 filters=filters))

    def t_latest(self, field: Any = None, room: Any = None, device_id: Any = None) -> dict[str, Any]:
        f, ms = self._field(field)
        filters = {}
        if room is not None:
            filters["room"] = (self._name("room", room),)
        if device_id is not None:
            filters["device_id"] = (self._name("device_id", device_id),)
        u = self.vocab.unit(f)
        return self._answer(Plan(kind="latest", measurements=tuple(ms), field=f, aggregation="latest",
                                 filters=filters, unit=u, stored_unit=u))

    def t_alerts(self, start_ns: Any = None, end_ns: Any = None) -> dict[str, Any]:
        from sensorium.agent.plan import TimeSpec

        for v in (start_ns, end_ns):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise Refused("start_ns and end_ns must be integers (UTC ns)")
        return self._answer(Plan(kind="alerts", aggregation="list", time=TimeSpec(start_ns=start_ns, end_ns=end_ns)))

    def t_history(self, field: Any = None, start_ns: Any = None, end_ns: Any = None, every: Any = "hour",
                  room: Any = None) -> dict[str, Any]:
        from sensorium.agent.plan import TimeSpec

        f, ms = self._field(field)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start_ns, end_ns)) or end_ns <= start_ns:
            raise Refused("start_ns < end_ns, both integers (UTC ns)")
        if every not in ("hour", "day"):
            raise Refused("every must be hour or day")
        filters = {"room": (self._name("room", room),)} if room is not None else {}
        u = self.vocab.unit(f)
        return self._answer(Plan(kind="aggregate", measurements=tuple(ms), field=f, aggregation="mean",
                                 time=TimeSpec(start_ns=start_ns, end_ns=end_ns), filters=filters, group_by=(every,),
                                 unit=u, stored_unit=u))

    def t_forecast(self, field: Any = None, hours: Any = 24, room: Any = None) -> dict[str, Any]:
        from sensorium.agent.plan import TimeSpec

        f, ms = self._field(field)
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= 24 * 14:
            raise Refused("hours must be an integer between 1 and 336")
        now = self.ctx.now()
        filters = {"room": (self._name("room", room),)} if room is not None else {}
        u = self.vocab.unit(f)
        return self._answer(Plan(kind="forecast", measurements=(ms[0],), field=f, aggregation="mean", filters=filters,
                                 time=TimeSpec(start_ns=now, end_ns=now + hours * 3600 * 10**9), unit=u, stored_unit=u))

    def t_send_command(self, device_id: Any = None, command: Any = None, params: Any = None) -> dict[str, Any]:
        from sensorium.devices.commands import check_command

        known = set(self.vocab.devices) | {a.device_id for a in self.vocab.actuators}
        if not isinstance(device_id, str) or device_id not in known:
            raise Refused(f"no device {device_id!r} that you may command")
        if command not in COMMANDS:
            raise Refused(f"command must be one of {', '.join(COMMANDS)}")
        params = check_command(device_id, command, params or {})
        action = {"kind": "command", "devices": [device_id], "command": command, "params": params,
                  "intent": {"action": command, "target": device_id, "parameters": params}}
        risky = command in ("unlock", "open")
        for k, v in params.items():
            if k == "temperature" and isinstance(v, int | float) and not 5 <= v <= 35:
                risky = True
        if risky:
            self.pending = action
            self.grounded = {"status": "needs_confirmation", "answer": f"Please confirm: {command} {params} → {device_id}."}
            return {"status": "needs_confirmation", "message": "the user must confirm this command"}
        out = self.agent._execute(self.ctx, action)
        self.grounded = {**out, "intent": action["intent"]}
        return out

    def t_draft_automation(self, definition: Any = None) -> dict[str, Any]:
        from sensorium.automations.loader import parse_definition
        from sensorium.errors import BadRequest

        try:
            a = parse_definition(definition)
        except BadRequest as exc:
            raise Refused(exc.message) from None
        draft = a.definition()
        self.pending = {"kind": "automation", "definition": draft}
        self.grounded = {"status": "needs_confirmation", "automation": draft,
                         "answer": f"Draft automation '{a.name}'. Confirm to save it."}
        return {"status": "needs_confirmation", "automation": draft}

    def result(self, text: str) -> dict[str, Any]:
        g = self.grounded or {}
        out: dict[str, Any] = {
            "status": g.get("status", "answered"), "answer": text or g.get("answer", ""),
            "plan": g.get("plan"), "sql": g.get("sql"), "table": g.get("table"), "chart": g.get("chart"),
            "value": g.get("value"), "confidence": 0.8,
            "understood": {"kind": "llm", "notes": ["answered by the LLM through tools"], "tool_calls": self.calls,
                           "refused": self.refused},
        }
        for k in ("intent", "automation", "commands"):
            if k in g:
                out[k] = g[k]
        if "_plan" in g:
            out["_plan"] = g["_plan"]
        if self.pending is not None:
            out["status"] = "needs_confirmation"
            out["_confirm_action"] = self.pending
        return out


def _brief(out: Any) -> Any:
    """What the model sees of a tool result (no internal keys, at most 50 table rows)."""
    if not isinstance(out, dict):
        return out
    b = {k: v for k, v in out.items() if not k.startswith("_")}
    t = b.get("table")
    if isinstance(t, dict) and len(t.get("rows", [])) > 50:
        b["table"] = {**t, "rows": t["rows"][:50], "truncated": True}
    return b


__all__ = ["TOOLS", "LLMClient", "LLMUnavailable"]
