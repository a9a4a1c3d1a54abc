"""The embedded understanding: questions → :class:`~sensorium.agent.plan.Plan`, no LLM.

Rule-based slot filling over the normalised question: the time expression first
(:mod:`~sensorium.agent.timeparse`), then names from the vocabulary (rooms, locations, devices:
longest alias first, then edit distance, then embeddings), the field, the aggregation, grouping,
top-k, a threshold, and the kind of question (alerts, anomalies, forecasts, devices). Words left
over are reported; a name-like word nothing explains ("in the attic") makes it decline. A
follow-up ("and the day before?", "only the bedroom", "by hour") is merged into the session's
previous plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sensorium.agent.matcher import EmbeddingMatcher, fuzzy
from sensorium.agent.plan import Plan, Threshold, TimeSpec, convert
from sensorium.agent.timeparse import NUMBER_WORDS, SPAN_NS, TimeParser, TimeRange, fmt_range
from sensorium.agent.vocabulary import CUMULATIVE_FIELDS, Name, Vocabulary, norm

NS = 1_000_000_000
DEFAULT_WINDOW_NS = 86400 * NS

STOPWORDS = frozenset("""
a an the what what's whats was is were are be been being did does do done has have had it its it's
there their this that these those me my our us we i you your show tell give get list display find
please can could would should will shall of in on at to for by from with within during over across
and or than then so up out as into per each every all any some much many how which who whom whose
where when why value values level levels reading readings measured measure recorded sensor sensors
data overall about around roughly approximately exactly currently right moment time times point
let know see check look like just only also too same again now what's up whole entire total
been being got getting go went going gone room rooms area home house inside indoor indoors
degrees degree celsius fahrenheit percent hours hour minutes days day weeks week month months
vs versus compared compare comparison between against difference differ ever
""".split())

AGG_WORDS: list[tuple[str, str]] = [
    (r"\b(?:on\s+)?average\b|\bavg\b|\bmean\b|\btypical\b", "mean"),
    (r"\bmaximum\b|\bmax\b|\bhighest\b|\bpeak\b|\btop\b|\bhottest\b|\bwarmest\b|\bmost\s+humid\b|\blargest\b|\bbiggest\b", "max"),
    (r"\bminimum\b|\bmin\b|\blowest\b|\bcoldest\b|\bcoolest\b|\bsmallest\b|\bdriest\b", "min"),
    (r"\btotal\b|\bsum\b|\bin\s+total\b|\baltogether\b", "sum"),
    (r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b", "count"),
    (r"\btrend(?:ing)?\b|\bgoing\s+(?:up|down)\b|\brising\s+or\s+falling\b", "trend"),
    (r"\bchange[sd]?\b|\bdifference\b|\bdelta\b|\b(?:rise|rose|risen|drop(?:ped)?|fell|fall(?:en)?|increase[sd]?|decrease[sd]?)\b", "change"),
    (r"\bcurrent(?:ly)?\b|\bright\s+now\b|\bnow\b|\blatest\b|\bat\s+the\s+moment\b|\bmost\s+recent\b|\blast\s+(?:reading|value|known)\b", "latest"),
]
DESC_WORDS = r"warmest|hottest|highest|most|largest|biggest|maximum|max|peak|dampest|wettest|top|loudest|strongest|most\s+humid|busiest"
ASC_WORDS = r"coldest|coolest|lowest|least|smallest|minimum|min|driest|weakest|quietest"
GROUP_WORDS: list[tuple[str, str]] = [
    (r"\b(?:by|per|each|every|for\s+each|for\s+every)\s+hour\b|\bhourly\b|\bhour\s+by\s+hour\b", "hour"),
    (r"\b(?:by|per|each|every|for\s+each|for\s+every)\s+day\b|\bdaily\b|\bday\s+by\s+day\b", "day"),
    (r"\b(?:by|per|each|every)\s+week\b|\bweekly\b", "week"),
    (r"\b(?:by|per|each|every|for\s+each|for\s+every)\s+(?:device|sensor)s?\b|\bdevice\s+by\s+device\b", "device_id"),
    (r"\b(?:by|per|each|every|for\s+each|for\s+every|in\s+each|in\s+every)\s+room\b|\broom\s+by\s+room\b", "room"),
    (r"\b(?:by|per|each|every|for\s+each|for\s+every|in\s+each)\s+(?:location|home|house|site)s?\b", "location"),
]
ENTITY_NOUNS = {"room": "room", "rooms": "room", "device": "device_id", "devices": "device_id",
                "sensor": "device_id", "sensors": "device_id", "location": "location", "locations": "location",
                "home": "location", "homes": "location", "house": "location", "houses": "location"}
UNIT_WORDS = {"°c": "degC", "celsius": "degC", "degc": "degC", "c": "degC", "°f": "degF", "fahrenheit": "degF",
              "degf": "degF", "f": "degF", "%": "%", "percent": "%", "w": "W", "watt": "W", "watts": "W",
              "v": "V", "volt": "V", "volts": "V", "kwh": "kWh", "hpa": "hPa", "dbm": "dBm"}
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_UNIT_RX = r"(?:\s*(?:degrees?\s*)?(°c|°f|celsius|fahrenheit|degc|degf|%|percent|watts?|w|volts?|v|kwh|hpa|dbm|c|f)\b|\s*(%)|\s*degrees?\b)?"
THRESH = re.compile(
    r"\b(above|over|more\s+than|greater\s+than|higher\s+than|exceed(?:ed|ing|s)?|at\s+least|>=|>|"
    r"below|under|less\s+than|lower\s+than|at\s+most|<=|<)\s*" + _NUMBER + _UNIT_RX)
OPS = {"above": ">", "over": ">", "more than": ">", "greater than": ">", "higher than": ">", "exceed": ">",
       "exceeded": ">", "exceeding": ">", "exceeds": ">", "at least": ">=", ">=": ">=", ">": ">",
       "below": "<", "under": "<", "less than": "<", "lower than": "<", "at most": "<=", "<=": "<=", "<": "<"}
WRITE_WORDS = re.compile(r"\b(delete|drop|truncate|insert|update|alter|erase|wipe|purge|overwrite|grant)\b")
COMMAND_START = re.compile(
    r"^(?:please\s+|could\s+you\s+|can\s+you\s+|would\s+you\s+|hey\s+\w+\s+)?(set|turn|switch|put|make|unlock|lock|open|close|shut|"
    r"dim|brighten|start|stop|raise|lower|increase|decrease|heat|cool|activate|deactivate|enable|disable)\b")
AUTOMATION = re.compile(r"\b(when(?:ever)?|if|every\s+(?:day|morning|evening|night|weekday)|each\s+(?:day|night)|at\s+\d{1,2}(?::\d\d)?\s*(?:am|pm))\b")


#: Things people ask about that no telemetry here measures: never answered with something else.
UNKNOWN_CONCEPTS = frozenset("""cost costs price prices bill bills money tariff euro euros dollars co2 noise
lux brightness rain rainfall weather wind air quality people person persons window windows open closed""".split())


@dataclass
class Understanding:
    """What the parser made of a text."""

    kind: str  # "query", "command", "automation", "decline"
    plan: Plan | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.0
    decline: str | None = None
    matched: dict[str, Any] = field(default_factory=dict)

    def understood(self) -> dict[str, Any]:
        return {"kind": self.kind, "notes": self.notes, **self.matched}


def normalise(text: str) -> str:
    t = text.strip().lower()
    t = t.replace("º", "°").replace("’", "'").replace("‘", "'")
    t = re.sub(r"°\s*([cf])\b", r"°\1", t)
    t = re.sub(r"(\d)\s*(°[cf])", r"\1 \2", t)
    t = re.sub(r"[?!,;]+", " ", t)
    t = re.sub(r"\.(?!\d)", " ", t)
    t = re.sub(r"\bwhat's\b", "what is", t)
    t = re.sub(r"\bhow's\b", "how is", t)
    return re.sub(r"\s+", " ", t).strip()


def _cut(text: str, span: tuple[int, int]) -> str:
    return re.sub(r"\s+", " ", text[: span[0]] + " " + text[span[1]:]).strip()


class NameFinder:
    """Finds vocabulary names in text: longest exact alias, then fuzzy, then embeddings."""

    def __init__(self, vocab: Vocabulary, embeddings: EmbeddingMatcher | None = None) -> None:
        self.vocab = vocab
        self.embeddings = embeddings
        self.reserved = set(vocab.field_aliases())  # "energy", "motion": fields before sensor types

    def find(self, text: str, notes: list[str]) -> tuple[list[tuple[Name, str, str]], str, float]:
        """([(name, words, how)], text without them, confidence penalty)."""
        words = text.split()
        found: list[tuple[Name, str, str]] = []
        used = [False] * len(words)
        penalty = 0.0
        aliases = self.vocab.aliases
        for n in (4, 3, 2, 1):
            for i in range(len(words) - n + 1):
                if any(used[i:i + n]):
                    continue
                phrase = " ".join(words[i:i + n])
                if phrase in STOPWORDS:
                    continue
                hits = aliases.get(phrase)
                if hits and phrase in self.reserved:
                    hits = [h for h in hits if h.tag != "sensor_type"]
                if hits:
                    for h in hits:
                        found.append((h, phrase, "exact"))
                    used[i:i + n] = [True] * n
        # edit distance for the words left (misspellings: "bedrom", "livingroom")
        multi = [a for a in aliases if " " in a]
        single = [a for a in aliases if " " not in a and len(a) >= 4]
        for n in (2, 1):
            for i in range(len(words) - n + 1):
                if any(used[i:i + n]):
                    continue
                phrase = " ".join(words[i:i + n])
                if len(phrase) < 5 or phrase in STOPWORDS or phrase in self.reserved or any(w in STOPWORDS or w.isdigit() for w in phrase.split()):
                    continue
                m = fuzzy(phrase, multi + single)
                if m is None and n == 1:
                    m = fuzzy(phrase, [a.replace(" ", "") for a in multi])
                    if m is not None:
                        m = type(m)(next(a for a in multi if a.replace(" ", "") == m.key), m.score, m.how)
                if m is not None:
                    for h in aliases[m.key]:
                        found.append((h, phrase, "fuzzy"))
                    notes.append(f"'{phrase}' read as '{m.key}' (spelling, similarity {m.score:.2f})")
                    penalty += 0.1
                    used[i:i + n] = [True] * n
        rest = " ".join(w for w, u in zip(words, used, strict=True) if not u)
        return found, rest, penalty

    def embed_slot(self, phrase: str, candidates: dict[str, Any], what: str, notes: list[str]) -> Any:
        """An embedding match of ``phrase`` among ``candidates`` (label → value), or None."""
        if self.embeddings is None or not phrase:
            return None
        m = self.embeddings.best(phrase, list(candidates))
        if m is None:
            return None
        notes.append(f"'{phrase}' read as {what} '{m.key}' (meaning, similarity {m.score:.2f})")
        return candidates[m.key]


class Parser:
    def __init__(self, vocab: Vocabulary, now_ns: int, tz: str = "UTC", *,
                 embeddings: EmbeddingMatcher | None = None, anomaly_score: float = 0.6) -> None:
        self.vocab = vocab
        self.now_ns = now_ns
        self.tz = tz
        self.times = TimeParser(now_ns, tz)
        self.names = NameFinder(vocab, embeddings)
        self.anomaly_score = anomaly_score

    # -- entry ---------------------------------------------------------------------------------------
    def parse(self, text: str, previous: Plan | None = None) -> Understanding:
        t = normalise(text)
        if not t:
            return self._decline("The question is empty.", [])
        if WRITE_WORDS.search(t) and not COMMAND_START.match(t):
            return self._decline("I only read data: I cannot delete, change or write stored data.", [])
        if COMMAND_START.match(t):
            kind = "automation" if AUTOMATION.search(t) else "command"
            return Understanding(kind, confidence=0.9)
        if re.match(r"^(?:create|add|make|set\s+up)\s+(?:an?\s+)?(?:automation|rule|routine)\b", t):
            return Understanding("automation", confidence=0.9)
        return self._question(t, previous)

    def _decline(self, why: str, notes: list[str], matched: dict[str, Any] | None = None) -> Understanding:
        return Understanding("decline", notes=notes, decline=why, matched=matched or {})

    # -- questions ------------------------------------------------------------------------------------
    def _question(self, t: str, previous: Plan | None) -> Understanding:
        notes: list[str] = []
        conf = 0.95
        matched: dict[str, Any] = {}
        rest = t
        # time
        tr, rest = self.times.parse(rest)
        relative = None
        m = re.search(r"\b(?:the\s+)?(day|week|hour|month)\s+(before|after)\b|\b(?:the\s+)?(previous|next)\s+(day|week|hour|month)\b", rest)
        if m and tr is None:
            unit = m.group(1) or m.group(4)
            direction = -1 if (m.group(2) == "before" or m.group(3) == "previous") else 1
            relative = (unit, direction)
            rest = _cut(rest, m.span())
        if tr is not None:
            notes.append(f"'{tr.text.strip()}' → {tr.label}")
            matched["time"] = tr.text.strip()
        # threshold (before names and numbers are consumed elsewhere)
        thr = None
        tm = THRESH.search(rest)
        if tm:
            op = OPS[re.sub(r"\s+", " ", tm.group(1))]
            unit_word = tm.group(3) or tm.group(4)
            thr = (op, float(tm.group(2)), UNIT_WORDS.get(unit_word) if unit_word else None, bool(re.search(r"degree", tm.group(0))))
            rest = _cut(rest, tm.span())
        # display unit ("in fahrenheit")
        unit = None
        um = re.search(r"\b(?:in|as)\s+(?:degrees\s+)?(fahrenheit|celsius|°f|°c)\b", rest)
        if um:
            unit = UNIT_WORDS[um.group(1)]
            rest = _cut(rest, um.span())
        # names
        found, rest, pen = self.names.find(rest, notes)
        conf -= pen
        filters: dict[str, list[str]] = {}
        for n, words, _how in found:
            if n.tag == "actuator":
                continue
            vals = filters.setdefault(n.tag, [])
            if n.value not in vals:
                vals.append(n.value)
            matched.setdefault("names", []).append({"words": words, n.tag: n.value})
        # kind words
        kind = None
        if re.search(r"\balert(?:s|ed)?\b|\balarm(?:s)?\b|\bfired\b|\bfiring\b|\btriggered\b", rest):
            kind = "alerts"
        elif re.search(r"\banomal(?:y|ies|ous)\b|\bunusual\b|\babnormal\b|\boutliers?\b|\bstrange\b|\bweird\b|\bodd\b", rest):
            kind = "anomalies"
        elif re.search(r"\bforecast\b|\bpredict(?:ed|ion)?\b|\bwill\b|\bexpect(?:ed)?\b|\bgoing\s+to\s+be\b", rest) or (
                tr is not None and tr.start_ns is not None and tr.start_ns >= self.now_ns):
            kind = "forecast"
        rest = re.sub(r"\b(?:alert(?:s|ed)?|alarms?|fired|firing|triggered|anomal(?:y|ies|ous)|unusual|abnormal|outliers?|"
                      r"strange|weird|odd|forecast|predict(?:ed|ion)?|will|expect(?:ed)?|going\s+to\s+be)\b", " ", rest)
        # devices/rooms listing
        listing = None
        lm = re.search(r"\b(?:which|what|list|show)\s+(?:all\s+)?(?:the\s+)?(devices|sensors|rooms|locations|homes)\b"
                       r"(?!\s+(?:was|were|had|has|used|drew|consumed|saw|recorded|reported)\b)"
                       r"|\bhow\s+many\s+(devices|sensors|rooms|locations|homes)\b", rest)
        # group by
        group: list[str] = []
        for rx, g in GROUP_WORDS:
            gm = re.search(rx, rest)
            if gm:
                group.append(g)
                rest = _cut(rest, gm.span())
        # top-k
        top_k = None
        order = "desc"
        km = re.search(r"\b(?:which|what|top|the)\s+(?:(\d+|" + "|".join(NUMBER_WORDS) + r")\s+)?(rooms?|devices?|sensors?|locations?|homes?|houses?)\b", rest)
        if km and kind != "alerts" and not listing and not (lm and not re.search(DESC_WORDS + "|" + ASC_WORDS, rest)):
            noun = ENTITY_NOUNS[km.group(2)]
            num = km.group(1)
            top_k = (int(num) if num.isdigit() else NUMBER_WORDS[num]) if num else (1 if not km.group(2).endswith("s") else 3)
            if noun not in group:
                group = [noun, *[g for g in group if g != noun]]
            rest = _cut(rest, km.span())
            if re.search(r"\b(?:" + ASC_WORDS + r")\b", rest):
                order = "asc"
        elif lm:
            listing = (lm.group(1) or lm.group(2))
            rest = _cut(rest, lm.span())
        # field
        fld, rest, fnote = self._field(rest, notes)
        if fnote:
            conf -= fnote
        if fld is not None:
            matched["field"] = fld
        # aggregation
        agg = None
        for rx, a in AGG_WORDS:
            am = re.search(rx, rest)
            if am:
                if agg is None:
                    agg = a
                rest = _cut(rest, am.span())
        if re.search(r"\bhow\s+long\b", t):
            rest = re.sub(r"\bhow\s+long\b", " ", rest)
        for sup in (DESC_WORDS, ASC_WORDS):
            rest = re.sub(r"\b(?:" + sup + r")\b", " ", rest)
        for w in ("detected", "detect", "last", "first", "there", "any", "motion", "used", "use", "consumed", "drew", "draw",
                  "seen", "saw", "reported", "logged", "happen", "happened", "plus", "or", "rising", "falling",
                  "warm", "cold", "hot", "humid"):
            rest = re.sub(rf"\b{w}\b", " ", rest)
        # leftovers
        left = [w for w in rest.split() if w not in STOPWORDS and not re.fullmatch(r"[\d.:%°-]+|[a-z]", w)]
        entity_gap = re.search(r"\b(?:in|at|inside|for|of|from|on)\s+(?:the\s+|my\s+|our\s+)?([a-z][a-z0-9']+(?:\s+[a-z][a-z0-9']+)?)", rest)
        gap_words = [w for w in (entity_gap.group(1).split() if entity_gap else []) if w in left]
        if gap_words:
            phrase = " ".join(gap_words)
            # meaning (embeddings) before giving up: "lounge" → living room
            cands = {n.label if n.label else n.value: (n.tag, n.value)
                     for ns in self.vocab.aliases.values() for n in ns if n.tag in ("room", "location")}
            cands = {norm(k): v for k, v in cands.items()}
            hit = self.names.embed_slot(phrase, cands, "a place", notes)
            if hit is not None:
                filters.setdefault(hit[0], []).append(hit[1])
                conf -= 0.2
                left = [w for w in left if w not in gap_words]
            else:
                rooms = ", ".join(norm(r) for r in self.vocab.names("room")) or "none"
                return self._decline(
                    f"I don't know a room, place or device called '{phrase}'. Rooms I know: {rooms}.", notes, matched)
        if left:
            if fld is None and kind not in ("alerts", "anomalies") and not listing:
                phrase = " ".join(left)
                fa = self.vocab.field_aliases()
                hit = self.names.embed_slot(phrase, {k: k for k in fa}, "the field", notes)
                if hit is None:
                    fields = ", ".join(sorted(self.vocab.fields()))
                    return self._decline(
                        f"I don't know what '{phrase}' refers to: no measurement, field, room or device has that "
                        f"name. Fields I know: {fields}.", notes, matched)
                fld = fa[hit]
                conf -= 0.2
            elif len(left) >= 2 or UNKNOWN_CONCEPTS.intersection(left):
                return self._decline(f"I don't know what '{' '.join(left)}' refers to here.", notes, matched)
            else:
                notes.append(f"ignored: {' '.join(left)}")
                conf -= 0.05 * min(len(left), 4)
        # follow-up: merge into the previous plan
        slots_given = bool(fld or agg or kind or thr or top_k or listing)
        if previous is not None and not slots_given and (tr or relative or filters or group or unit):
            return self._follow_up(previous, tr, relative, filters, group, unit, notes, matched, conf)
        if previous is not None and relative and not tr:
            prev = self._follow_up(previous, None, relative, {}, [], None, notes, matched, conf)
            tr = TimeRange(prev.plan.time.start_ns, prev.plan.time.end_ns, prev.plan.time.text,
                           prev.plan.time.understood, prev.plan.time.span) if prev.plan else None
        if listing:
            if re.search(r"\bhow\s+many\b|\bnumber\s+of\b", t):
                agg = "count"
            return self._listing(listing, filters, agg, tr, notes, matched, conf)
        if kind == "alerts":
            return self._alerts(tr, filters, agg, notes, matched, conf)
        if kind == "anomalies":
            return self._anomalies(tr, filters, fld, group, top_k, agg, notes, matched, conf)
        if fld is None and thr is not None and (thr[3] or thr[2] in ("degC", "degF")) and "temperature" in self.vocab.fields():
            fld = "temperature"
            notes.append("'degrees': temperature")
        elif fld is None and thr is not None and thr[2] == "%" and "humidity" in self.vocab.fields():
            fld = "humidity"
            notes.append("'%': humidity")
        if fld is None and previous is not None and previous.field and (thr or agg or group or top_k):
            fld = previous.field
            notes.append(f"{fld}, as in the previous question")
        if fld is None:
            what = "a measurement (temperature, humidity, power, ...)"
            return self._decline(f"I could not tell which {what} you mean.", notes, matched)
        ms = self.vocab.fields().get(fld, [])
        st = [s for s in filters.get("sensor_type", []) if s in ms]
        if st:
            ms = st
        for tag in filters:
            ms = [m for m in ms if tag in self.vocab.tags(m)]
        if not ms:
            tags = ", ".join(sorted(filters))
            return self._decline(f"No measurement with {fld} can be filtered by {tags}.", notes, matched)
        stored_unit = self.vocab.unit(fld)
        if fld == "motion":
            thr = thr or (">", 0.5, None, False)
        threshold = None
        if thr is not None:
            op, given, given_unit, said_degrees = thr
            if given_unit is None and said_degrees and fld == "temperature":
                given_unit = stored_unit
            if given_unit in ("degC", "degF") and stored_unit in ("degC", "degF"):
                value = convert(given, given_unit, stored_unit)
                if given_unit != stored_unit:
                    notes.append(f"{given:g} {'°F' if given_unit == 'degF' else '°C'} = {value:.2f} {'°C' if stored_unit == 'degC' else '°F'} (stored unit)")
            else:
                value = given
            threshold = Threshold(op=op, value=value, given=given, given_unit=given_unit)
        if kind == "forecast":
            return self._forecast(ms, fld, tr, filters, agg, unit, stored_unit, notes, matched, conf)
        if tr is not None and tr.start_ns is not None and tr.start_ns >= self.now_ns:
            return self._decline("That time is in the future: I can forecast it (ask 'what will the "
                                 f"{fld} be tomorrow?'), not measure it.", notes, matched)
        if unit == "degF" and stored_unit != "degC":
            unit = None
        return self._plan(ms, fld, agg, tr, filters, group, top_k, order, threshold, unit, stored_unit, t,
                          notes, matched, conf)

    def _field(self, rest: str, notes: list[str]) -> tuple[str | None, str, float]:
        fa = self.vocab.field_aliases()
        words = rest.split()
        for n in (3, 2, 1):
            for i in range(len(words) - n + 1):
                phrase = " ".join(words[i:i + n])
                if phrase in fa:
                    return fa[phrase], " ".join(words[:i] + words[i + n:]), 0.0
        for i, w in enumerate(words):
            if len(w) >= 5 and w not in STOPWORDS:
                m = fuzzy(w, [a for a in fa if len(a) >= 5])
                if m is not None:
                    notes.append(f"'{w}' read as '{m.key}' (spelling, similarity {m.score:.2f})")
                    return fa[m.key], " ".join(words[:i] + words[i + 1:]), 0.1
        return None, rest, 0.0

    def _time_spec(self, tr: TimeRange | None, default: str, notes: list[str]) -> tuple[TimeSpec, float]:
        if tr is not None:
            return TimeSpec(start_ns=tr.start_ns, end_ns=tr.end_ns, text=tr.text.strip(), understood=tr.label,
                            span=tr.span), 0.0
        if default == "all":
            notes.append("no time given: all data")
            return TimeSpec(understood="no time given: all data"), 0.0
        s = self.now_ns - DEFAULT_WINDOW_NS
        lab = f"no time given: the last 24 hours ({fmt_range(s, self.now_ns)})"
        notes.append(lab)
        return TimeSpec(start_ns=s, end_ns=self.now_ns, understood=lab, span="day"), 0.1

    def _plan(self, ms: list[str], fld: str, agg: str | None, tr: TimeRange | None, filters: dict[str, list[str]],
              group: list[str], top_k: int | None, order: str, threshold: Threshold | None, unit: str | None,
              stored_unit: str | None, t: str, notes: list[str], matched: dict[str, Any], conf: float) -> Understanding:
        is_bool = self.vocab.field_type(ms[0], fld) == "bool"
        kind = "aggregate"
        if threshold is not None:
            kind = "threshold"
            if re.search(r"\bhow\s+long\b|\bfor\s+how\s+long\b|\bduration\b", t):
                agg = "how_long"
            elif re.search(r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b", t):
                agg = "count"
            elif re.search(r"^(?:was|were|did|has|have|is)\b|\bever\b", t):
                agg = "ever"
            else:
                agg = "when"
            group = []
            top_k = None
        elif top_k is not None:
            kind = "topk"
            if agg in (None, "max", "min") or (agg == "max" and order == "desc"):
                explicit = re.search(r"\b(?:maximum|max|peak|highest\s+(?:reading|value)|minimum|min|lowest\s+(?:reading|value))\b", t)
                if explicit:
                    agg = "max" if re.search(r"\b(?:maximum|max|peak|highest)\b", t) else "min"
                elif fld in CUMULATIVE_FIELDS:
                    agg = "consumption"
                elif is_bool:
                    agg = "count"
                else:
                    agg = "mean"
        elif agg is None:
            present = re.search(r"^(?:what\s+is|how\s+is|is\s+it|how\s+(?:warm|cold|hot|humid)\s+is)\b", t)
            if present and tr is None:
                agg = "latest"
            else:
                agg = "mean"
                if fld in CUMULATIVE_FIELDS and re.search(r"\bhow\s+much\b|\bused\b|\bconsum", t):
                    agg = "consumption"
                elif is_bool and re.search(r"\bhow\s+many\b|\bhow\s+often\b", t):
                    agg = "count"
        elif agg in ("sum", "count") and fld in CUMULATIVE_FIELDS and agg == "sum":
            agg = "consumption"
        if agg == "latest" and not group:
            kind = "latest"
        if kind == "aggregate" and fld in CUMULATIVE_FIELDS and agg == "mean" and re.search(r"\bhow\s+much\b|\bused\b|\bconsum", t):
            agg = "consumption"
        # comparisons: "bedroom vs living room" → grouped by the compared tag
        for tag, vals in filters.items():
            if len(vals) > 1 and tag not in group and kind in ("aggregate", "latest") and agg != "consumption" or (
                    len(vals) > 1 and tag not in group and agg == "consumption"):
                group.append(tag)
                notes.append(f"compared by {tag}: {', '.join(vals)}")
        default = "all" if kind in ("latest",) else "last24h"
        if kind == "threshold" and agg in ("ever",) and tr is None:
            default = "all"
        spec, pen = self._time_spec(tr, default, notes)
        conf -= pen
        if kind == "latest" and tr is None:
            spec = TimeSpec(understood="the latest reading")
        plan = Plan(kind=kind, measurements=tuple(ms), field=fld, aggregation=agg,
                    time=spec, filters={k: tuple(v) for k, v in filters.items()}, group_by=tuple(group),
                    top_k=top_k, order=order, threshold=threshold, unit=unit or stored_unit,
                    stored_unit=stored_unit)
        return Understanding("query", plan=plan, notes=notes, confidence=round(max(0.05, conf), 2), matched=matched)

    def _follow_up(self, prev: Plan, tr: TimeRange | None, relative: tuple[str, int] | None,
                   filters: dict[str, list[str]], group: list[str], unit: str | None, notes: list[str],
                   matched: dict[str, Any], conf: float) -> Understanding:
        upd: dict[str, Any] = {}
        if tr is not None:
            upd["time"] = TimeSpec(start_ns=tr.start_ns, end_ns=tr.end_ns, text=tr.text.strip(), understood=tr.label, span=tr.span)
        elif relative is not None:
            unit_name, direction = relative
            t = prev.time
            if t.start_ns is None or t.end_ns is None:
                return self._decline("The previous question had no time range to move.", notes, matched)
            step = SPAN_NS.get(unit_name, t.end_ns - t.start_ns) if unit_name != "month" else t.end_ns - t.start_ns
            if t.span == unit_name or unit_name == "month":
                step = t.end_ns - t.start_ns if unit_name == "month" else SPAN_NS.get(unit_name, t.end_ns - t.start_ns)
            s, e = t.start_ns + direction * step, t.end_ns + direction * step
            if t.span == "day" and unit_name == "day" and (t.end_ns - t.start_ns) < 86400 * NS:
                e = s + 86400 * NS  # "today (so far)" → the whole day before
            lab = f"the {unit_name} {'before' if direction < 0 else 'after'}: {fmt_range(s, e)}"
            notes.append(lab)
            upd["time"] = TimeSpec(start_ns=s, end_ns=e, text=f"the {unit_name} {'before' if direction < 0 else 'after'}",
                                   understood=lab, span=t.span)
        if filters:
            new = dict(prev.filters)
            for k, v in filters.items():
                new[k] = tuple(v)
            upd["filters"] = new
            if prev.kind == "topk" and any(k in prev.group_by for k in filters):
                pass
        if group:
            upd["group_by"] = tuple(group)
            if prev.kind in ("latest", "topk"):
                upd["kind"] = "aggregate"
                if prev.aggregation == "latest":
                    upd["aggregation"] = "mean"
                upd["top_k"] = None
        if unit:
            upd["unit"] = unit
        plan = prev.model_copy(update=upd)
        plan = Plan.model_validate(plan.model_dump())
        notes.append("a follow-up: the previous question, with " + ", ".join(
            k.replace("_", " ") for k in upd) + " changed")
        matched["follow_up"] = True
        return Understanding("query", plan=plan, notes=notes, confidence=round(max(0.05, conf - 0.05), 2), matched=matched)

    def _listing(self, what: str, filters: dict[str, list[str]], agg: str | None, tr: TimeRange | None,
                 notes: list[str], matched: dict[str, Any], conf: float) -> Understanding:
        group: tuple[Any, ...] = ()
        if what in ("rooms",):
            group = ("room",)
        elif what in ("locations", "homes"):
            group = ("location",)
        count = agg == "count"
        ms = [m for m in self.vocab.measurements if "device_id" in self.vocab.tags(m)]
        plan = Plan(kind="devices", measurements=tuple(ms), aggregation="count_devices" if count else "list",
                    filters={k: tuple(v) for k, v in filters.items()}, group_by=group,
                    time=TimeSpec(understood="devices that sent telemetry"))
        return Understanding("query", plan=plan, notes=notes, confidence=round(conf, 2), matched=matched)

    def _alerts(self, tr: TimeRange | None, filters: dict[str, list[str]], agg: str | None, notes: list[str],
                matched: dict[str, Any], conf: float) -> Understanding:
        spec, _ = self._time_spec(tr, "all", notes)
        plan = Plan(kind="alerts", aggregation="count" if agg == "count" else "list", time=spec,
                    filters={k: tuple(v) for k, v in filters.items()})
        return Understanding("query", plan=plan, notes=notes, confidence=round(conf, 2), matched=matched)

    def _anomalies(self, tr: TimeRange | None, filters: dict[str, list[str]], fld: str | None, group: list[str],
                   top_k: int | None, agg: str | None, notes: list[str], matched: dict[str, Any], conf: float) -> Understanding:
        if "anomaly_scores" not in self.vocab.derived:
            return self._decline("There are no anomaly scores here (the stream's detect stage is off).", notes, matched)
        spec, pen = self._time_spec(tr, "last24h", notes)
        plan = Plan(kind="anomalies", field=fld, aggregation="count" if (agg == "count" or top_k) else "list",
                    time=spec, filters={k: tuple(v) for k, v in filters.items()}, group_by=tuple(group),
                    top_k=top_k, anomaly_score=self.anomaly_score)
        notes.append(f"an anomaly is a point whose anomaly score is ≥ {self.anomaly_score}")
        return Understanding("query", plan=plan, notes=notes, confidence=round(conf - pen, 2), matched=matched)

    def _forecast(self, ms: list[str], fld: str, tr: TimeRange | None, filters: dict[str, list[str]], agg: str | None,
                  unit: str | None, stored_unit: str | None, notes: list[str], matched: dict[str, Any], conf: float) -> Understanding:
        if tr is None:
            s, e = self.now_ns, self.now_ns + DEFAULT_WINDOW_NS
            spec = TimeSpec(start_ns=s, end_ns=e, understood=f"no time given: the next 24 hours ({fmt_range(s, e)})")
            notes.append(spec.understood)
            conf -= 0.1
        else:
            if tr.end_ns is None or tr.end_ns <= self.now_ns:
                return self._decline("A forecast needs a time in the future (tomorrow, the next 6 hours).", notes, matched)
            spec = TimeSpec(start_ns=max(tr.start_ns or self.now_ns, self.now_ns), end_ns=tr.end_ns, text=tr.text, understood=tr.label)
        if len(ms) != 1:
            return self._decline(f"Which measurement's {fld} should I forecast? ({', '.join(ms)})", notes, matched)
        multi = {k: v for k, v in filters.items() if len(v) > 1}
        if multi:
            return self._decline("I forecast one series (or the average of the matching ones) at a time: name one "
                                 + ", ".join(multi), notes, matched)
        a = agg if agg in ("max", "min") else "mean"
        plan = Plan(kind="forecast", measurements=tuple(ms), field=fld, aggregation=a,
                    time=spec, filters={k: tuple(v) for k, v in filters.items()}, unit=unit or stored_unit,
                    stored_unit=stored_unit)
        return Understanding("query", plan=plan, notes=notes, confidence=round(conf - 0.1, 2), matched=matched)


__all__ = ["Parser", "Understanding", "normalise"]
