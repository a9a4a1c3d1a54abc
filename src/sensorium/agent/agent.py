"""The agent: questions, commands and automations in plain language (docs/agent.md).

    agent = Agent(platform)
    out = agent.ask("what was the average temperature in the living room yesterday?",
                    principal=None, session_id="s1")
    out["answer"], out["plan"], out["sql"], out["table"], out["chart"], out["confidence"]

Every call takes a ``principal`` (a :class:`~sensorium.auth.principal.Principal`, or None for
unrestricted use on this machine) and reads and acts only through an
:class:`~sensorium.agent.context.AgentContext` made for it: a user or guest sees, is understood
about and may command only what their access scope holds (docs/agent.md, docs/security.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from sensorium.agent import intents
from sensorium.agent.answer import Result, run
from sensorium.agent.context import AgentContext
from sensorium.agent.interactions import InteractionStore
from sensorium.agent.matcher import EXTRA_HINT, EmbeddingMatcher
from sensorium.agent.parser import NameFinder, Parser, Understanding
from sensorium.agent.plan import Plan
from sensorium.agent.vocabulary import Vocabulary, build
from sensorium.errors import BadRequest, ConfigError, SensoriumError

if TYPE_CHECKING:
    from sensorium.auth.principal import Principal
    from sensorium.platform import Sensorium

log = logging.getLogger("sensorium.agent")
MAX_QUESTION = 1000
VOCABULARIES = 64  # access scopes whose vocabulary is kept
CAPABILITIES = (
    "I answer questions about stored telemetry: averages, highs and lows, totals, counts, trends and "
    "changes over a time range (yesterday, the last 24 hours, last week, since Monday 8 am, in March, "
    "between two dates), by hour/day/device/room, comparisons (bedroom vs living room), top-k "
    "('which 3 rooms were warmest'), thresholds ('when was it above 25 degrees'), alerts, anomalies "
    "and forecasts; I send device commands ('set the living room to 72 degrees') and draft "
    "automations ('turn on the hallway light when motion is detected after 10 pm')."
)


def _table_json(table: Any) -> dict[str, Any] | None:
    if table is None:
        return None
    from sensorium.api.app import table_to_json

    out = table_to_json(table)
    out.pop("types", None)
    return out


class Agent:
    def __init__(
        self,
        platform: Sensorium,
        *,
        embeddings: bool | None = None,
        publisher: Callable[[], Any] | None = None,
    ) -> None:
        """``embeddings``: use the sentence-embedding matcher (None: when the ``agent`` extra is
        installed and ``[agent] embeddings`` is on)."""
        self.platform = platform
        st = platform.settings.agent
        self.settings = st
        try:
            ZoneInfo(st.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"[agent] timezone {st.timezone!r} is not an IANA time zone (e.g. 'Europe/Paris')") from None
        want = st.embeddings if embeddings is None else embeddings
        self.embeddings: EmbeddingMatcher | None = None
        self.embeddings_note: str | None = None
        if want:
            if EmbeddingMatcher.available():
                self.embeddings = EmbeddingMatcher(st.embedding_min_similarity)
            else:
                self.embeddings_note = f"meaning-based name matching is off: {EXTRA_HINT}"
        self._publisher = publisher
        self._sessions: OrderedDict[tuple[str | None, str], tuple[float, Plan]] = OrderedDict()
        self._lock = threading.Lock()
        self._vocab: OrderedDict[Any, tuple[float, Vocabulary]] = OrderedDict()  # access scope -> vocabulary
        self.interactions = InteractionStore(platform.dir / "agent.sqlite", platform.clock)
        self.llm: Any = None
        if st.llm_url:
            from sensorium.agent.llm import LLMClient

            self.llm = LLMClient(st)

    def close(self) -> None:
        self.interactions.close()

    # -- plumbing --------------------------------------------------------------------------------
    def context(self, principal: Principal | None) -> AgentContext:
        return AgentContext(self.platform, principal, publisher=self._publisher)

    def vocabulary(self, ctx: AgentContext) -> Vocabulary:
        """Built through ``ctx`` (so from what its principal may see), cached per access scope for
        ``[agent] vocabulary_ttl_s``."""
        now = time.monotonic()
        key = ctx.scope_key
        with self._lock:
            hit = self._vocab.get(key)
            if hit is not None and now - hit[0] < self.settings.vocabulary_ttl_s:
                return hit[1]
        v = build(ctx)
        with self._lock:
            self._vocab[key] = (now, v)
            self._vocab.move_to_end(key)
            while len(self._vocab) > VOCABULARIES:
                self._vocab.popitem(last=False)
        return v

    def forget_vocabulary(self) -> None:
        with self._lock:
            self._vocab.clear()

    def _previous(self, ctx: AgentContext, session_id: str | None) -> Plan | None:
        if not session_id:
            return None
        with self._lock:
            hit = self._sessions.get((ctx.who, session_id))  # a session is its user's alone
            if hit is None or time.monotonic() - hit[0] > self.settings.session_ttl_s:
                return None
            return hit[1]

    def _remember(self, ctx: AgentContext, session_id: str | None, plan: Plan) -> None:
        if not session_id:
            return
        key = (ctx.who, session_id)
        with self._lock:
            self._sessions[key] = (time.monotonic(), plan)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.settings.max_sessions:
                self._sessions.popitem(last=False)

    def parser(self, ctx: AgentContext) -> Parser:
        return Parser(self.vocabulary(ctx), ctx.now(), self.settings.timezone, embeddings=self.embeddings,
                      anomaly_score=self.settings.anomaly_score)

    # -- the entry point -----------------------------------------------------------------------------
    def ask(self, question: str | None = None, *, principal: Principal | None = None, session_id: str | None = None,
            confirm: str | None = None, use_llm: bool = True) -> dict[str, Any]:
        if confirm is not None:
            return self.confirm(confirm, principal=principal)
        if not isinstance(question, str) or not question.strip():
            raise BadRequest('ask needs a "question" (or a "confirm" token)')
        if len(question) > MAX_QUESTION:
            raise BadRequest(f"question longer than {MAX_QUESTION} characters")
        if session_id is not None and (not isinstance(session_id, str) or not 1 <= len(session_id) <= 128):
            raise BadRequest("session_id must be a string of 1-128 characters")
        ctx = self.context(principal)
        if self.llm is not None and use_llm:
            from sensorium.agent.llm import LLMUnavailable

            try:
                out = self.llm.ask(self, ctx, question, session_id)
                return self._record(ctx, session_id, question, out, kind="ask")
            except LLMUnavailable as exc:
                fallback_note = f"the LLM was not used ({exc}); answered by the embedded parser"
                out = self._embedded(ctx, question, session_id)
                out["understood"]["notes"].append(fallback_note)
                out["understood"]["refused"] = [f"refused: {r}" for r in exc.refused]
                return out
        return self._embedded(ctx, question, session_id)

    def _embedded(self, ctx: AgentContext, question: str, session_id: str | None) -> dict[str, Any]:
        parser = self.parser(ctx)
        u = parser.parse(question, self._previous(ctx, session_id))
        if u.kind == "command":
            return self._command(ctx, parser, question, session_id)
        if u.kind == "automation":
            return self._automation(ctx, parser, question, session_id)
        if u.kind == "decline" or u.plan is None:
            if self.embeddings_note:
                u.notes.append(self.embeddings_note)
            return self._record(ctx, session_id, question, self._declined(u), kind="ask")
        return self._record(ctx, session_id, question, self.answer_plan(ctx, u.plan, u), kind="ask")

    def answer_plan(self, ctx: AgentContext, plan: Plan, u: Understanding | None = None, session_id: str | None = None) -> dict[str, Any]:
        vocab = self.vocabulary(ctx)
        is_bool = bool(plan.field and plan.measurements and vocab.field_type(plan.measurements[0], plan.field) in ("bool", "boolean"))
        notes = list(u.notes) if u else []
        try:
            res: Result = run(ctx, plan, is_bool)
        except SensoriumError as exc:
            return {"status": "declined", "answer": f"I could not answer that: {exc.message}", "plan": plan.public(),
                    "sql": None, "table": None, "chart": None, "value": None, "confidence": 0.0,
                    "understood": {"kind": "query", "notes": notes, **(u.matched if u else {})}, "_plan": plan}
        return {
            "status": "answered",
            "answer": res.answer,
            "plan": plan.public(),
            "sql": res.sql,
            "source": res.source,
            "table": _table_json(res.table),
            "chart": res.chart,
            "value": res.value,
            "understood": {"kind": "query", "notes": notes, **(u.matched if u else {})},
            "confidence": u.confidence if u else 0.9,
            "_plan": plan,
        }

    def _declined(self, u: Understanding) -> dict[str, Any]:
        said = u.decline or "I did not understand the question."
        return {"status": "declined", "answer": f"{said} {CAPABILITIES}", "plan": None, "sql": None, "table": None,
                "chart": None, "value": None, "understood": u.understood(), "confidence": 0.0}

    def _record(self, ctx: AgentContext, session_id: str | None, text: str, out: dict[str, Any], *, kind: str) -> dict[str, Any]:
        plan = out.pop("_plan", None)
        if plan is not None and out["status"] == "answered":
            self._remember(ctx, session_id, plan)
        intent = out.get("plan") or out.get("intent") or out.get("automation")
        resp = {k: out.get(k) for k in ("answer", "value", "sql", "confidence")}
        iid = self.interactions.add(principal=ctx.who, session_id=session_id, kind=kind, text=text,
                                    intent=intent, status=out["status"], response=resp)
        self._document(ctx, iid, session_id, kind, text, intent, out["status"], resp)
        token = out.pop("_confirm_action", None)
        if token is not None:
            out["confirm_token"] = self.interactions.pending(iid, ctx.who, token)
        out.setdefault("needs_confirmation", out["status"] == "needs_confirmation")
        out["interaction_id"] = iid
        out["session_id"] = session_id
        return out

    def _document(self, ctx: AgentContext, iid: int, session_id: str | None, kind: str, text: str,
                  intent: Any, status: str, response: Any) -> None:
        """A registered user's interaction also goes to the registry's document store (kind
        ``interaction``, docs/documents.md): intent, status, value, SQL and confidence as data;
        what they typed and were told as ``pii`` (encrypted at rest) — readable by them and by
        admins, erasable with the user."""
        p = ctx.principal
        store = self.platform.registry_store
        if p is None or p.user_id is None or store is None:
            return
        from sensorium.auth.principal import Principal
        from sensorium.documents.store import DocumentStore

        writer = Principal(id="agent", role="admin", via="local")  # recorded as created_by

        resp = dict(response or {})
        answer = resp.pop("answer", None)
        body = {"kind": "interaction", "user_id": p.user_id, "pii": {"text": text, "response": answer},
                "data": {"interaction_id": iid, "session_id": session_id, "kind": kind, "intent": intent,
                         "status": status, **resp}}
        try:
            # plain JSON values (plans carry tuples): what the store validates and keeps
            DocumentStore(store, clock=self.platform.clock).add(orjson.loads(orjson.dumps(body, default=str)), writer)
        except SensoriumError as exc:  # the answer stands; agent.sqlite holds the interaction
            log.warning("interaction %d not written to the document store: %s", iid, exc.message)

    # -- commands ------------------------------------------------------------------------------------
    def _command(self, ctx: AgentContext, parser: Parser, text: str, session_id: str | None) -> dict[str, Any]:
        intent = intents.parse_command(text)
        base: dict[str, Any] = {"plan": None, "sql": None, "table": None, "chart": None, "value": None}
        if intent is None:
            out = {**base, "status": "declined", "answer": f"I could not understand that command. {CAPABILITIES}",
                   "understood": {"kind": "command", "notes": []}, "confidence": 0.0}
            return self._record(ctx, session_id, text, out, kind="command")
        res = intents.resolve(intent, parser.vocab, parser.names)
        understood: dict[str, Any] = {"kind": "command", "notes": intent.notes, "intent": intent.to_dict()}
        if res.decline:
            out = {**base, "status": "declined", "answer": res.decline, "intent": intent.to_dict(),
                   "understood": understood, "confidence": 0.0}
            return self._record(ctx, session_id, text, out, kind="command")
        action = {"kind": "command", "devices": [d["device_id"] for d in res.devices], "command": res.command,
                  "params": res.params, "intent": intent.to_dict()}
        targets = ", ".join(f"{d['name']} ({d['device_id']})" if d["name"] != d["device_id"] else d["device_id"] for d in res.devices)
        desc = f"{res.command} {_params(res.params)} → {targets}".replace("  ", " ")
        if res.confirm_reasons:
            out = {**base, "status": "needs_confirmation", "answer": f"Please confirm: {desc}. ("
                   + "; ".join(res.confirm_reasons) + ")", "intent": {**intent.to_dict(), "resolved": action},
                   "understood": understood, "confidence": 0.7, "_confirm_action": action}
            return self._record(ctx, session_id, text, out, kind="command")
        out = {**base, "intent": {**intent.to_dict(), "resolved": action}, "understood": understood, "confidence": 0.9}
        out.update(self._execute(ctx, action))
        return self._record(ctx, session_id, text, out, kind="command")

    def _execute(self, ctx: AgentContext, action: dict[str, Any]) -> dict[str, Any]:
        sent = []
        failed = []
        for dev in action["devices"]:
            try:
                sent.append(ctx.send_command(dev, action["command"], action["params"]))
            except SensoriumError as exc:
                failed.append({"device_id": dev, "error": exc.message})
        if failed:
            return {"status": "failed", "answer": f"Sent to {len(sent)} of {len(action['devices'])} devices; failed: "
                    + "; ".join(f"{f['device_id']}: {f['error']}" for f in failed), "commands": sent, "failed": failed}
        return {"status": "executed", "answer": f"Sent '{action['command']}' {_params(action['params'])}to "
                + ", ".join(action["devices"]) + ".", "commands": sent}

    # -- automations -----------------------------------------------------------------------------------
    def _automation(self, ctx: AgentContext, parser: Parser, text: str, session_id: str | None) -> dict[str, Any]:
        from sensorium.automations.loader import parse_definition

        base: dict[str, Any] = {"plan": None, "sql": None, "table": None, "chart": None, "value": None}
        definition, notes, why = intents.parse_automation(text, parser.vocab, parser.names)
        understood = {"kind": "automation", "notes": notes}
        if definition is None:
            out = {**base, "status": "declined", "answer": why or "I could not draft that automation.",
                   "understood": understood, "confidence": 0.0}
            return self._record(ctx, session_id, text, out, kind="automation")
        try:
            a = parse_definition(definition)
        except BadRequest as exc:
            out = {**base, "status": "declined", "answer": f"The draft is not valid: {exc.message}",
                   "understood": understood, "confidence": 0.0, "automation": definition}
            return self._record(ctx, session_id, text, out, kind="automation")
        draft = a.definition()
        out = {**base, "status": "needs_confirmation", "automation": draft, "understood": understood, "confidence": 0.8,
               "answer": f"Draft automation '{a.name}': {describe(draft)}. Confirm to save it.",
               "_confirm_action": {"kind": "automation", "definition": draft}}
        return self._record(ctx, session_id, text, out, kind="automation")

    # -- confirmation ------------------------------------------------------------------------------------
    def confirm(self, token: str, *, principal: Principal | None = None) -> dict[str, Any]:
        ctx = self.context(principal)
        iid, action = self.interactions.take(token, ctx.who)
        base: dict[str, Any] = {"plan": None, "sql": None, "table": None, "chart": None, "value": None, "confidence": 1.0,
                "understood": {"kind": "confirmation", "notes": [f"confirms interaction {iid}"]},
                "interaction_id": iid, "needs_confirmation": False}
        if action["kind"] == "command":
            out = {**base, **self._execute(ctx, action), "intent": action["intent"]}
        else:
            from sensorium.automations.loader import parse_definition

            saved = ctx.save_automation(parse_definition(action["definition"]))
            out = {**base, "status": "saved", "answer": f"Saved automation '{saved['name']}'.", "automation": saved}
        self.interactions.update(iid, status=out["status"], response={"answer": out["answer"]})
        return out


def _params(p: dict[str, Any]) -> str:
    if not p:
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in p.items()) + ") "


def describe(d: dict[str, Any]) -> str:
    t = d["trigger"]
    if t["kind"] == "telemetry":
        test = next((f"{k} {t[k]}" for k in ("above", "below", "equals") if t.get(k) is not None), "")
        where = "".join(f" ({k}={v})" for k, v in t.get("tags", {}).items())
        when = f"when {t['measurement']}.{t['field']}{where} goes {test}"
    elif t["kind"] == "schedule":
        when = f"on schedule '{t['cron']}'"
    else:
        when = f"when an alert of rule '{t.get('rule')}' is {t.get('state')}"
    conds = "".join(f", only {c.get('after') or ''}–{c.get('before') or ''}" for c in d.get("conditions", []))
    acts = "; ".join(f"{a['command']} {a['device_id']} {a.get('params') or ''}".strip() for a in d["actions"] if a["kind"] == "command")
    return f"{when}{conds} → {acts}"


__all__ = ["CAPABILITIES", "Agent", "NameFinder"]
