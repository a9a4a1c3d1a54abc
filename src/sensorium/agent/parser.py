"""The embedded understanding: questions → :class:`~sensorium.agent.plan.Plan`, no LLM.

Rule-based slot filling over the normalised question: typing slips of known words first
("curent" → current, one edit away), then the time expression (:mod:`~sensorium.agent.timeparse`),
a threshold ("above 25 degrees", "colder than 16 °C": the comparative names the field), names from
the vocabulary (rooms, locations, devices: longest alias first, then edit distance — digits never
—, then embeddings), the kind of question (alerts, anomalies, forecasts, devices), grouping ("by
hour", "hour-by-hour", "break it down by device"), top-k ("which room", "the 3 most humid rooms"),
the field and the aggregation (words, and extents: "how hot did it get" → max, "how low did it
go" → min). Words left over are reported; a name-like word nothing explains ("in the attic",
"home-3", "dev-00099"), a time word nothing read ("on weekends") or a concept nothing measures
makes it decline. A follow-up ("and the day before?", "only the bedroom", "by hour", "what was the
highest?", "what about humidity?") is the session's previous plan with the parts it names changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sensorium.agent.matcher import EmbeddingMatcher, fuzzy, typo
from sensorium.agent.plan import Plan, Threshold, TimeSpec, convert
from sensorium.agent.timeparse import NUMBER_WORDS, SPAN_NS, TimeParser, TimeRange, fmt_range
from sensorium.agent.vocabulary import CUMULATIVE_FIELDS, TAG_ENTITY, Name, Vocabulary, norm

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

#: "How hot did it get", "how low did the humidity go": the extent of a change of state is the
#: extreme in that direction (an adjective of degree with a verb of reaching).
_REACH = (r"(?=.*\b(?:get|gets|got|gotten|go|goes|went|gone|reach(?:ed|es)?|climb(?:ed|s)?|rise|rises|rose|risen|"
          r"drop(?:ped|s)?|fall|falls|fell|fallen|dip(?:ped|s)?|sink|sank|sunk|peak(?:ed|s)?|become|became|grow|grew)\b)")
EXTENT_UP = r"hot|warm|high|humid|damp|muggy|wet|strong|loud|big|large"
EXTENT_DOWN = r"cold|cool|chilly|low|dry|weak|quiet|small"
#: Units people count in: "how many kWh" asks for an amount, not a number of readings.
_AMOUNT_UNITS = r"kwh|kilowatt(?:\s*|-)hours?|watt(?:\s*|-)hours?|wh|watts?|degrees?|volts?|percent"
AGG_WORDS: list[tuple[str, str]] = [
    (r"\bhow\s+(?:" + EXTENT_UP + r")\b" + _REACH, "max"),
    (r"\bhow\s+(?:" + EXTENT_DOWN + r")\b" + _REACH, "min"),
    (r"\bmedian\b", "median"),
    (r"\b(?:on\s+)?average\b|\bavg\b|\bmean\b|\btypical\b|\baveraged\b", "mean"),
    (r"\bmaximum\b|\bmax\b|\bhighest\b|\bpeak\b|\btop\b|\bhottest\b|\bwarmest\b|\bmost\s+humid\b|\blargest\b|\bbiggest\b"
     r"|\bdampest\b|\bwettest\b|\bmuggiest\b", "max"),
    (r"\bminimum\b|\bmin\b|\blowest\b|\bcoldest\b|\bcoolest\b|\bchilliest\b|\bsmallest\b|\bdriest\b", "min"),
    (r"\bhow\s+many\b(?!\s+(?:" + _AMOUNT_UNITS + r")\b)|\bcount\b|\bnumber\s+of\b", "count"),
    (r"\btotal\b|\bsum\b|\bin\s+total\b|\baltogether\b", "sum"),
    (r"\btrend(?:ing|s)?\b|\b(?:going\s+|go\s+)?(?:up\s+or\s+down|down\s+or\s+up)\b|\bgoing\s+(?:up|down)\b"
     r"|\b(?:rising|increasing|climbing)\s+or\s+(?:falling|decreasing|dropping)\b"
     r"|\b(?:falling|decreasing|dropping)\s+or\s+(?:rising|increasing|climbing)\b", "trend"),
    (r"\bchange[sd]?\b|\bdifference\b|\bdelta\b|\b(?:rise|rose|risen|drop(?:ped)?|fell|fall(?:en)?|increase[sd]?|decrease[sd]?)\b", "change"),
    (r"\bcurrent(?:ly)?\b|\bright\s+now\b|\bnow\b|\blatest\b|\bat\s+the\s+moment\b|\bmost\s+recent\b|\blast\s+(?:reading|value|known)\b", "latest"),
]
DESC_WORDS = (r"warmest|hottest|highest|most|largest|biggest|maximum|max|peak|dampest|wettest|muggiest|top|loudest|strongest|"
              r"most\s+humid|busiest|warmer|hotter|higher|more\s+humid")
ASC_WORDS = r"coldest|coolest|chilliest|lowest|least|smallest|minimum|min|driest|weakest|quietest|colder|cooler|lower|drier"
#: A ranking phrase before an entity noun: "3 most humid rooms", "top 3 coldest rooms".
SUPERLATIVE = r"(?:most|least)\s+[a-z]+|" + DESC_WORDS + "|" + ASC_WORDS
GROUP_WORDS: list[tuple[str, str]] = [
    (r"\b(?:by|per|each|every|for\s+each|for\s+every)\s+hour\b|\bhourly\b|\bhour\s+by\s+hour\b|\bhour\s+per\s+hour\b", "hour"),
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
#: Fields and units of levels and rates: their readings do not add up to anything.
LEVEL_FIELDS = frozenset({"temperature", "humidity", "pressure", "power", "voltage", "rssi", "battery"})
LEVEL_UNITS = frozenset({"degC", "degF", "%", "percent", "hPa", "W", "kW", "V", "dBm", "fraction"})
#: The field a unit usually measures, when the stored units do not say.
UNIT_FIELDS = {"W": "power", "kWh": "energy", "V": "voltage", "hPa": "pressure", "dBm": "rssi"}
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_UNIT_RX = r"(?:\s*(?:degrees?\s*)?(°c|°f|celsius|fahrenheit|degc|degf|%|percent|watts?|w|volts?|v|kwh|hpa|dbm|c|f)\b|\s*(%)|\s*degrees?\b)?"
#: Comparatives: "colder than 16 degrees" is a threshold below 16 on the field the adjective
#: names; "more/less/higher/lower than" on whatever field the question names.
COMPARATIVES: dict[str, tuple[str, str | None]] = {
    "warmer": (">", "temperature"), "hotter": (">", "temperature"), "colder": ("<", "temperature"),
    "cooler": ("<", "temperature"), "chillier": ("<", "temperature"), "more humid": (">", "humidity"),
    "damper": (">", "humidity"), "wetter": (">", "humidity"), "muggier": (">", "humidity"),
    "drier": ("<", "humidity"), "dryer": ("<", "humidity"), "less humid": ("<", "humidity"),
    "more": (">", None), "greater": (">", None), "higher": (">", None), "bigger": (">", None), "larger": (">", None),
    "less": ("<", None), "fewer": ("<", None), "lower": ("<", None), "smaller": ("<", None),
}
_COMPARATIVE_RX = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(COMPARATIVES, key=len, reverse=True))
THRESH = re.compile(
    r"\b(above|over|(?:" + _COMPARATIVE_RX + r")\s+than|exceed(?:ed|ing|s)?|at\s+least|>=|>|"
    r"below|under|at\s+most|<=|<)\s*" + _NUMBER + _UNIT_RX)
OPS = {"above": ">", "over": ">", "exceed": ">", "exceeded": ">", "exceeding": ">", "exceeds": ">", "at least": ">=",
       ">=": ">=", ">": ">", "below": "<", "under": "<", "at most": "<=", "<=": "<=", "<": "<"}


def threshold_op(words: str) -> tuple[str, str | None]:
    """(operator, the field the words imply or None) for a threshold phrase ("colder than")."""
    w = re.sub(r"\s+", " ", words.strip())
    if w.endswith(" than"):
        return COMPARATIVES[w.removesuffix(" than")]
    return OPS[w], None
WRITE_WORDS = re.compile(r"\b(delete|truncate|insert|update|alter|erase|wipe|purge|overwrite|grant)\b|^drop\b"
                         r"|\bdrop\s+(?:the\s+|all\s+|every\s+)?(?:[a-z_]+\s+)?(?:table|tables|database|data|bucket|measurement|rows|everything)\b")
COMMAND_START = re.compile(
    r"^(?:please\s+|could\s+you\s+|can\s+you\s+|would\s+you\s+|hey\s+\w+\s+)?(set|turn|switch|put|make|unlock|lock|open|close|shut|"
    r"dim|brighten|start|stop|raise|lower|increase|decrease|heat|cool|activate|deactivate|enable|disable)\b")
#: A set point: an imperative verb, a target, "to" and a value ("change the bedroom temperature to
#: 68 F", "heat the bathroom to 24 degrees", "make the office 22 degrees", "keep the bedroom at 20").
SETPOINT_UNIT = r"°c|°f|degrees?(?:\s*(?:c|f|celsius|fahrenheit))?|celsius|fahrenheit|%|percent|c|f"
SETPOINT = re.compile(
    r"^(?:please\s+|could\s+you\s+|can\s+you\s+|would\s+you\s+|will\s+you\s+)?"
    r"(?:(?:set|change|adjust|bring|put|heat|warm|cool|raise|lower|increase|decrease|turn)(?:\s+(?:up|down))?"
    r"\s+(?:the\s+)?(?P<target>.+?)\s+(?:(?:up|down)\s+)?(?:to|at)"
    r"|(?:make|keep|set)\s+(?:the\s+)?(?P<target2>.+?)(?:\s+(?:at|to))?)"
    r"\s+(?P<value>-?\d+(?:\.\d+)?)\s*(?P<unit>" + SETPOINT_UNIT + r")?\s*(?:please)?$")
AUTOMATION = re.compile(r"\b(when(?:ever)?|if|every\s+(?:day|morning|evening|night|weekday)|each\s+(?:day|night)|at\s+\d{1,2}(?::\d\d)?\s*(?:am|pm))\b")


#: Things people ask about that no telemetry here measures: never answered with something else.
UNKNOWN_CONCEPTS = frozenset("""cost costs price prices bill bills money tariff euro euros dollars co2 noise
lux brightness rain rainfall weather wind quality people person persons window windows open closed water gas
speed variance deviation stddev std percentile percentiles quantile quantiles mode range spread stable steady
constant fluctuate fluctuated fluctuating fluctuation fluctuations vary varied variation volatile normal
fine safe comfortable healthy""".split())
#: Time words the time parser did not read: never dropped silently (a default range would replace
#: what was asked), the question is declined instead.
TIME_WORDS = frozenset("""weekend weekends weekday weekdays workday workdays mornings afternoons evenings nights
overnight daytime nighttime night morning afternoon evening noon midnight dawn dusk sunrise sunset lunchtime
fortnight quarter season summer winter spring autumn holiday holidays christmas easter monthly yearly annually
decade century o'clock oclock ago""".split())
#: Words that only carry the tone of a question ("has anyone moved", "the driest air").
FILLERS = frozenset("""anyone anybody someone somebody something anything air atmosphere conditions condition
stuff things thing got get gets getting go goes went gone reach reached climb climbed dip dipped sink sank
pick picked send sent taken take recorded register registered like events event occurrences device devices
want wanted need needed wondering wonder hey hi hello kindly quick quickly question using log logged logging
approximate approximately i'd i'm i've we'd we're you're info information""".split())
_STAT = r"(?:average|mean|avg|median|max(?:imum)?|min(?:imum)?|highest|lowest|peak|total|sum|count|latest|current)"
#: Two statistics asked at once ("the highest and lowest temperature"): one plan answers one.
TWO_STATS = re.compile(r"\b(" + _STAT + r")\s*(?:,|\band\b|\bor\b|&|/|\bplus\b)\s*(?:the\s+)?(" + _STAT + r")\b")
#: Follow-up openers: "what about humidity?", "and last week?", "same for the garage".
FOLLOW_UP = re.compile(r"^(?:and|also|then|ok(?:ay)?|so|now|what\s+about|how\s+about|same\s+(?:for|with|in|but|thing))\b")


#: Words saying a meter's amount was used: "how much energy", "energy usage", "consumed".
USE_WORDS = r"\bhow\s+much\b|\bhow\s+many\s+(?:kwh|kilowatt|watt|wh)\b|\bus(?:e|ed|es|age|ing)\b|\bconsum\w*|\bspent\b|\bburn\w*"
_COUNT_WORDS = "|".join(w for w in NUMBER_WORDS if w not in ("a", "an"))
TOPK = re.compile(
    r"\b(?:(?P<which>which|what|top|rank|sort|order|ranking\s+of)\s+(?:(?:are|were|is|was)\s+)?)?(?:the\s+|all\s+(?:the\s+)?)?"
    r"(?:(?P<n>\d+|" + _COUNT_WORDS + r")\s+)?"
    r"(?:(?P<sup>" + SUPERLATIVE + r")\s+)?(?P<noun>rooms?|devices?|sensors?|locations?|homes?|houses?)\b")
#: "Which day last week was the warmest", "what hour was the busiest for motion": ranked time buckets.
TOPK_TIME = re.compile(
    r"\b(?:(?:which|what)\s+(?:(?:are|were|is|was)\s+(?:the\s+)?)?(?:(?P<n>\d+|" + _COUNT_WORDS + r")\s+)?(?:(?P<sup>"
    + SUPERLATIVE + r")\s+)?|the\s+(?:(?P<n2>\d+|" + _COUNT_WORDS + r")\s+)?(?P<sup2>" + SUPERLATIVE + r")\s+)"
    r"(?P<noun>hour|day|week)s?\b")
BREAK_DOWN = (r"\b(?:break(?:s|ing)?|broken|split(?:ting)?)\s+(?:(?:it|this|that|them|these|those)\s+)?(?:down|out|up)\b"
              r"|\bbreak\s*down\b|\bbroken\s+down\b|\bsplit\b")
#: Words shaped like names of things ("home-3", "dev-00099", "b1", "device 42"): when no name
#: matched them, the thing does not exist here — declined, never answered for the whole fleet.
ID_LIKE = re.compile(r"\b(?:(?P<noun>device|dev|sensor|node|unit|home|house|site|location|room)\s*#\s*\d+"
                     r"|(?P<noun2>device|dev|sensor|node|home|house|site|location|room)\s+\d+(?!\s*(?:%|°|degrees?|am|pm|a\.m|p\.m)\b|\.\d)"
                     r"|[a-z]+(?:[-_][a-z]+)*[-_#]?\d+[a-z0-9]*(?:[-_][a-z0-9]+)*)\b")
TAG_WORDS = {"room": "in the", "location": "at", "device_id": "named", "sensor_type": "of type"}
#: Words of the grammar a misspelling may be read as (besides field and place names).
GRAMMAR_WORDS = frozenset("""average mean median maximum minimum highest lowest peak current currently latest recent
total count number trend trending change changed difference forecast predict predicted expected anomaly anomalies
anomalous alert alerts alarm alarms fired triggered readings reading devices device sensors sensor rooms locations
location homes hourly daily weekly yesterday today tomorrow tonight morning afternoon evening night weekend
week weeks month months hours hour minutes days since between until during last past previous next this
warmest coldest hottest coolest driest dampest wettest above below under exceeded exceed greater higher lower
least most celsius fahrenheit degrees percent compare compared versus often long detected used consumed
consumption usage which what when where show list break down each every""".split())


def _lexicon(vocab: Vocabulary) -> tuple[list[str], frozenset[str]]:
    """(the words a misspelling may be read as, every word known as it is)."""
    from sensorium.agent.timeparse import MONTHS, WEEKDAYS

    words = set(GRAMMAR_WORDS) | set(WEEKDAYS) | set(MONTHS)
    for alias in list(vocab.field_aliases()) + list(vocab.aliases):
        words |= {w for w in alias.split() if w.isalpha() and len(w) >= 4}
    known = frozenset(words | STOPWORDS | UNKNOWN_CONCEPTS | TIME_WORDS | FILLERS | set(NUMBER_WORDS) | set(UNIT_WORDS)
                      | {"mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "jan", "feb", "mar",
                         "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "kwh"})
    return sorted(w for w in words if len(w) >= 4), known


#: words that name a place without a preposition: a question using one that no name matches is
#: declined (answering over every place would present a guess as a fact)
PLACE_ADVERBS = frozenset({"upstairs", "downstairs", "outside", "outdoors", "indoors", "indoor",
                           "outdoor", "attic", "cellar", "loft", "lounge", "nursery", "porch", "patio", "yard",
                           "backyard", "garden", "balcony", "terrace", "den", "pantry", "shed"})


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
    t = re.sub(r"\b(what|how|it|that|there|here|who|where|when)'?s\b", _contraction, t)
    t = re.sub(r"\blet's\b", "let us", t)
    t = re.sub(r"(?<=[a-z0-9])'s\b|(?<=[a-z])s'(?=\s|$)", lambda m: "" if m.group(0) == "'s" else "s", t)  # possessives
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # "hour-by-hour", "wi-fi"; "dev-00012" and "home-1" stay
    return re.sub(r"\s+", " ", t).strip()


def _contraction(m: re.Match[str]) -> str:
    """"what's" / "whats" → "what is" ("its", "whos" stay: words of their own)."""
    if "'" in m.group(0) or m.group(0) in ("whats", "hows", "thats", "theres", "heres", "wheres", "whens"):
        return f"{m.group(1)} is"
    return m.group(0)


def _digits(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


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
                hits = aliases.get(phrase) or aliases.get(norm(phrase))  # "dev-00012" = "dev 00012"
                if hits and phrase in self.reserved:
                    hits = [h for h in hits if h.tag != "sensor_type"]
                if hits:
                    for h in hits:
                        found.append((h, phrase, "exact"))
                    used[i:i + n] = [True] * n
        # edit distance for the words left (misspellings: "bedrom", "livingroom")
        multi = [a for a in aliases if " " in a and a not in self.reserved]
        single = [a for a in aliases if " " not in a and len(a) >= 4 and a not in self.reserved]
        for n in (2, 1):
            for i in range(len(words) - n + 1):
                if any(used[i:i + n]):
                    continue
                phrase = " ".join(words[i:i + n])
                if len(phrase) < 5 or phrase in STOPWORDS or phrase in self.reserved or any(w in STOPWORDS or w.isdigit() for w in phrase.split()):
                    continue
                # a number in a name is never misspelt: "dev-00099" is not dev-00009, "home-3" not home-1
                digits = _digits(phrase)
                m = fuzzy(phrase, [a for a in multi + single if _digits(a) == digits])
                if m is None and n == 1:
                    m = fuzzy(phrase, [a.replace(" ", "") for a in multi if _digits(a) == digits])
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
        self.lexicon, self.known = _lexicon(vocab)

    # -- entry ---------------------------------------------------------------------------------------
    def parse(self, text: str, previous: Plan | None = None) -> Understanding:
        t = normalise(text)
        if not t:
            return self._decline("The question is empty.", [])
        if WRITE_WORDS.search(t) and not COMMAND_START.match(t):
            return self._decline("I only read data: I cannot delete, change or write stored data.", [])
        if COMMAND_START.match(t) or SETPOINT.match(t):
            kind = "automation" if AUTOMATION.search(t) else "command"
            return Understanding(kind, confidence=0.9)
        if re.match(r"^(?:create|add|make|set\s+up)\s+(?:an?\s+)?(?:automation|rule|routine)\b", t):
            return Understanding("automation", confidence=0.9)
        return self._question(t, previous)

    def _decline(self, why: str, notes: list[str], matched: dict[str, Any] | None = None) -> Understanding:
        return Understanding("decline", notes=notes, decline=why, matched=matched or {})

    # -- spelling ---------------------------------------------------------------------------------------
    def _spell(self, t: str, notes: list[str]) -> tuple[str, float]:
        """Words nothing knows, read as the one known word they are a typing slip of (one edit
        away: "curent" → current, "enrgy" → energy, "avrage" → average, "ofice" → office).
        Short words, words with digits and other forms of known words ("weekends") stay."""
        out: list[str] = []
        pen = 0.0
        for w in t.split():
            if len(w) < 5 or not w.isalpha() or w in self.known:
                out.append(w)
                continue
            m = typo(w, self.lexicon)
            if m is None:
                out.append(w)
                continue
            notes.append(f"'{w}' read as '{m.key}' (spelling, similarity {m.score:.2f})")
            pen += 0.1
            out.append(m.key)
        return " ".join(out), pen

    def _unknown_name(self, rest: str) -> str | None:
        """A word shaped like a name the platform would have ("home-3", "dev-00099", "device 42")
        that no name matched: why the question is declined, with the names known."""
        for m in ID_LIKE.finditer(rest):
            word = m.group(0)
            if word in UNKNOWN_CONCEPTS:
                continue
            noun = m.group("noun") or m.group("noun2")
            if noun:
                tag = "room" if noun == "room" else "location" if noun in ("home", "house", "site", "location") else "device_id"
            else:
                prefix = re.sub(r"[\d\W_]+$", "", word)
                tag = next((tg for tg in ("device_id", "location", "room")
                            if any(re.sub(r"[\d\W_]+$", "", v.lower()) == prefix for v in self.vocab.names(tg))), "")
            rooms = ", ".join(norm(r) for r in self.vocab.names("room")) or "none"
            if tag == "device_id":
                devs = self.vocab.names("device_id")
                known = ", ".join(devs[:20]) + (f" ... ({len(devs)})" if len(devs) > 20 else "")
                return f"I don't know a device called '{word}'. Devices I know: {known or 'none'}. Rooms I know: {rooms}."
            if tag == "location":
                locs = ", ".join(self.vocab.names("location")) or "none"
                return f"I don't know a location called '{word}'. Locations I know: {locs}."
            return f"I don't know a room, place or device called '{word}'. Rooms I know: {rooms}."
        return None

    # -- questions ------------------------------------------------------------------------------------
    def _question(self, t: str, previous: Plan | None) -> Understanding:
        notes: list[str] = []
        conf = 0.95
        matched: dict[str, Any] = {}
        t, pen = self._spell(t, notes)
        conf -= pen
        marker = previous is not None and bool(FOLLOW_UP.match(t))
        if previous is not None:  # "now in fahrenheit": a follow-up's opening "now" is not "the latest reading"
            t = re.sub(r"^(?:(?:and|ok(?:ay)?|so)\s+)?now\s+(?=\S)", "", t)
        rest = t
        # time
        tr, rest = self.times.parse(rest)
        untimed = rest
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
            second, _ = self.times.parse(rest)
            if second is not None or m:  # "yesterday or the day before", "this week compared with last week"
                other = second.text.strip() if second is not None else m.group(0) if m else ""
                return self._decline(f"I answer over one time range per question ('{tr.text.strip()}' and "
                                     f"'{other}' are two): ask about each in turn.", notes, matched)
        # threshold (before names and numbers are consumed elsewhere): "above 25 degrees", "colder than 16"
        thr: tuple[str, float, str | None, bool, str | None] | None = None
        tm = THRESH.search(rest)
        if tm:
            op, implied = threshold_op(tm.group(1))
            unit_word = tm.group(3) or tm.group(4)
            thr = (op, float(tm.group(2)), UNIT_WORDS.get(unit_word) if unit_word else None,
                   bool(re.search(r"degree", tm.group(0))), implied)
            rest = _cut(rest, tm.span())
        # display unit ("in fahrenheit")
        unit = None
        um = re.search(r"\b(?:in|as|to)\s+(?:degrees\s+)?(fahrenheit|celsius|°f|°c)\b", rest)
        if um:
            unit = UNIT_WORDS[um.group(1)]
            rest = _cut(rest, um.span())
        # names ("excluding the garage": every other one)
        excluded: list[tuple[Name, str, str]] = []
        xm = re.search(r"\b(?:excluding|exclude|except(?:\s+for)?|other\s+than|apart\s+from|besides|without|"
                       r"but\s+not|not\s+(?:in|including|counting))\s+", rest)
        if xm:
            tail = rest[xm.end():].split()
            excluded, tail_rest, pen = self.names.find(" ".join(tail[:4]), notes)
            conf -= pen
            if not excluded:
                return self._decline(f"I could not tell what to leave out after '{xm.group(0).strip()}'.", notes, matched)
            rest = " ".join([rest[:xm.start()], tail_rest, *tail[4:]])
        found, rest, pen = self.names.find(rest, notes)
        conf -= pen
        filters: dict[str, list[str]] = {}
        for x, words, _how in excluded:
            if x.tag not in ("room", "location", "device_id"):
                return self._decline(f"I can leave out rooms, places or devices, not '{words}'.", notes, matched)
            keep = [v for v in self.vocab.names(x.tag) if v not in {e.value for e, _, _ in excluded}]
            filters[x.tag] = keep
            notes.append(f"'{xm.group(0).strip() if xm else ''} {words}': every other {TAG_ENTITY[x.tag]} ({', '.join(keep)})")
            matched.setdefault("names", []).append({"words": words, "excluded": x.value})
        for n, words, _how in found:
            if n.tag == "actuator":
                continue
            vals = filters.setdefault(n.tag, [])
            if n.value not in vals:
                vals.append(n.value)
            matched.setdefault("names", []).append({"words": words, n.tag: n.value})
        # a name shaped like the platform's names that none of them is: declined, never fleet-wide
        unknown = self._unknown_name(rest)
        if unknown is not None:
            return self._decline(unknown, notes, matched)
        # kind words
        kind = None
        if re.search(r"\balert(?:s|ed)?\b|\balarm(?:s)?\b|\bfired\b|\bfiring\b|\btriggered\b|\bnotifications?\b", rest):
            kind = "alerts"
        elif re.search(r"\banomal(?:y|ies|ous)\b|\bunusual\b|\babnormal\b|\boutliers?\b|\bstrange\b|\bweird\b|\bodd\b", rest):
            kind = "anomalies"
        elif re.search(r"\bforecast\b|\bpredict(?:ed|ion)?\b|\bwill\b|\bexpect(?:ed)?\b|\bgoing\s+to\s+be\b", rest) or (
                tr is not None and tr.start_ns is not None and tr.start_ns >= self.now_ns):
            kind = "forecast"
        if kind == "alerts":
            rest = re.sub(r"\b(?:fire[sd]?|firing|(?:go|goes|went|gone)\s+off|raised|trigger(?:ed|s)?|notifications?)\b", " ", rest)
        rest = re.sub(r"\b(?:alert(?:s|ed)?|alarms?|fired|firing|triggered|anomal(?:y|ies|ous)|unusual|abnormal|outliers?|"
                      r"strange|weird|odd|forecast|predict(?:ed|ion)?|will|expect(?:ed)?|going\s+to\s+be)\b", " ", rest)
        # devices/rooms listing
        listing = None
        lm = re.search(r"\b(?:which|what|list|show)\s+(?:all\s+)?(?:the\s+)?(devices|sensors|rooms|locations|homes)\b"
                       r"(?!\s+(?:was|were|had|has|used|drew|consumed|saw|recorded|reported)\b)"
                       r"|\bhow\s+many\s+(devices|sensors|rooms|locations|homes)\b", rest)
        # group by ("by hour", "per room", "hour-by-hour"; "break it down by device")
        group: list[str] = []
        for rx, g in GROUP_WORDS:
            gm = re.search(rx, rest)
            if gm:
                group.append(g)
                rest = _cut(rest, gm.span())
        if group:
            rest = re.sub(BREAK_DOWN, " ", rest)
        # top-k: "which room", "the 3 most humid rooms", "top 3 coldest rooms", "the device that used the most"
        top_k = None
        order = "desc"
        sup_any = re.search(r"\b(?:" + DESC_WORDS + "|" + ASC_WORDS + r")\b", rest)
        km = next((x for x in TOPK.finditer(rest) if x.group("which") or x.group("n") or x.group("sup") or (
            sup_any and re.match(r"\s+(?:with|that|which|where|whose|having)\b", rest[x.end():]))), None)
        kt = TOPK_TIME.search(rest) if km is None and not lm and kind is None else None
        if kt is not None and (sup_any or kt.group("sup") or kt.group("sup2")):
            noun = kt.group("noun")
            num = kt.group("n") or kt.group("n2")
            top_k = (int(num) if num.isdigit() else NUMBER_WORDS[num]) if num else 1
            group = [noun, *[g for g in group if g != noun]]
            sup = kt.group("sup") or kt.group("sup2") or ""
            rest = _cut(rest, kt.span())
            if re.search(r"\b(?:" + ASC_WORDS + r")\b", sup) or (
                    not re.search(r"\b(?:" + DESC_WORDS + r")\b", sup) and re.search(r"\b(?:" + ASC_WORDS + r")\b", rest)):
                order = "asc"
            if sup:
                rest = f"{rest} {sup}"
        elif km and kind != "alerts" and not listing and not (lm and not sup_any):
            noun = ENTITY_NOUNS[km.group("noun")]
            num = km.group("n")
            ranking_all = km.group("which") in ("rank", "sort", "order", "ranking of")
            top_k = (int(num) if num.isdigit() else NUMBER_WORDS[num]) if num else (
                100 if ranking_all else 1 if not km.group("noun").endswith("s") else 3)
            if noun not in group:
                group = [noun, *[g for g in group if g != noun]]
            sup = km.group("sup") or ""
            rest = _cut(rest, km.span())
            if re.search(r"\b(?:" + ASC_WORDS + r")\b", sup) or (
                    not re.search(r"\b(?:" + DESC_WORDS + r")\b", sup) and re.search(r"\b(?:" + ASC_WORDS + r")\b", rest)):
                order = "asc"
            if sup:  # "3 most humid rooms": the field and the extreme are in the ranking words
                rest = f"{rest} {sup}"
        elif lm and thr is not None and lm.group(1):  # "which devices went above 2000 W"
            noun = ENTITY_NOUNS[lm.group(1)]
            group = [noun, *[g for g in group if g != noun]]
            top_k = 3
            rest = _cut(rest, lm.span())
        elif lm:
            listing = (lm.group(1) or lm.group(2))
            rest = _cut(rest, lm.span())
        two = TWO_STATS.search(t)
        if two and two.group(1) != two.group(2):
            return self._decline(f"I answer one statistic per question ('{two.group(1)}' and '{two.group(2)}' are two): "
                                 "ask about each in turn.", notes, matched)
        # field — the aggregation is read from the words before the field takes its own ("coldest" is both)
        agg_text = rest
        fld, rest, fnote = self._field(rest, notes)
        if fnote:
            conf -= fnote
        if fld is not None:
            matched["field"] = fld
            # a second field word that is also a sensor type: "the battery of the motion sensors"
            for w in rest.split():
                st_hits = [n for n in self.vocab.aliases.get(w, []) if n.tag == "sensor_type"]
                if w in self.names.reserved and st_hits and re.search(rf"\b{w}\s+(?:sensors?|devices?)\b", rest):
                    filters.setdefault("sensor_type", []).extend(n.value for n in st_hits if n.value not in filters.get("sensor_type", []))
                    matched.setdefault("names", []).append({"words": w, "sensor_type": st_hits[0].value})
                    rest = re.sub(rf"\b{w}\b", " ", rest, count=1)
            # more words for the same field are that field ("the coldest temperature"); another field's
            # words make two questions ("temperature and humidity"): one measurement per question
            fa = self.vocab.field_aliases()
            others = []
            for alias in sorted(fa, key=len, reverse=True):
                if alias in STOPWORDS or not re.search(rf"\b{re.escape(alias)}\b", rest):
                    continue
                other = fa[alias]
                if other != fld and (alias.startswith(norm(other)) or " " in alias):
                    others.append(other)  # named outright ("humidity", "air pressure"), not a word like "consumption"
                rest = re.sub(rf"\b{re.escape(alias)}\b", " ", rest)
            if others:
                return self._decline(f"I answer about one measurement per question ({fld} and {others[0]} are two): "
                                     "ask about each in turn.", notes, matched)
        # aggregation
        agg = None
        for rx, a in AGG_WORDS:
            if agg is None and re.search(rx, agg_text):
                agg = a
            rest = re.sub(rx, " ", rest)
        if agg == "change" and re.search(r"\bdiffer(?:ence|ent|s)?\b", agg_text) and any(len(v) > 1 for v in filters.values()):
            agg = None  # "the difference between the garage and the basement": a comparison, not a change over time
        if top_k is not None and re.search(dict((a, rx) for rx, a in AGG_WORDS)["latest"], agg_text):
            agg = "latest"  # "which room is warmest right now": ranked by the latest readings
        if re.search(r"\bhow\s+long\b", t):
            rest = re.sub(r"\bhow\s+long\b", " ", rest)
        for sup in (DESC_WORDS, ASC_WORDS):
            rest = re.sub(r"\b(?:" + sup + r")\b", " ", rest)
        for w in ("detected", "detect", "last", "first", "there", "any", "motion", "used", "use", "usage", "consumed",
                  "consume", "drew", "draw", "seen", "saw", "reported", "logged", "happen", "happened", "plus", "or",
                  "rising", "falling", "warm", "cold", "hot", "humid", "high", "low", "chilly", "dry"):
            rest = re.sub(rf"\b{w}\b", " ", rest)
        # leftovers
        left = [w for w in rest.split() if w not in STOPWORDS and w not in FILLERS
                and not re.fullmatch(r"[\d.:%°-]+|[a-z]", w)]
        timeish = [w for w in left if w in TIME_WORDS] + re.findall(
            r"\b\d{1,2}(?::\d{2})?\s*(?:am|pm)\b|\b\d{1,2}:\d{2}\b|\b\d{1,2}(?:st|nd|rd|th)\b"
            r"|\b\d+\s*(?:h|hrs?|d|wks?|mins?)\b", rest)
        if timeish:
            return self._decline(
                f"I could not read the time in '{' '.join(timeish)}': say e.g. 'yesterday', 'last weekend', "
                "'since Monday 8 am', 'on 2026-03-03' or 'between March 2 and March 4'.", notes, matched)
        entity_gap = re.search(r"\b(?:in|at|inside|for|of|from|on)\s+(?:the\s+|my\s+|our\s+)?([a-z][a-z0-9']+(?:\s+[a-z][a-z0-9']+)?)", rest)
        gap_words = [w for w in (entity_gap.group(1).split() if entity_gap else []) if w in left]
        if not gap_words:  # a place said without a preposition ("upstairs"): never silently dropped
            gap_words = [w for w in left if w in PLACE_ADVERBS][:1]
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
        # the field a threshold implies: "colder than" → temperature, "above 25 degrees", "over 70%"
        if fld is None and thr is not None and thr[4] is not None and thr[4] in self.vocab.fields():
            fld = thr[4]
            notes.append(f"'{tm.group(1) if tm else ''}': {fld}")
        elif fld is None and thr is not None and (thr[3] or thr[2] in ("degC", "degF")) and "temperature" in self.vocab.fields():
            fld = "temperature"
            notes.append("'degrees': temperature")
        elif fld is None and thr is not None and thr[2] == "%" and "humidity" in self.vocab.fields():
            fld = "humidity"
            notes.append("'%': humidity")
        elif fld is None and thr is not None and thr[2] is not None and self._field_of_unit(thr[2]):
            fld = self._field_of_unit(thr[2])
            notes.append(f"'{thr[2]}': {fld}")
        # follow-up: merge into the previous plan
        slots_given = bool(fld or agg or kind or thr or top_k or listing)
        if previous is not None and not slots_given and (tr or relative or filters or group or unit):
            return self._follow_up(previous, tr, relative, filters, group, unit, notes, matched, conf)
        if previous is not None and relative and not tr:
            prev = self._follow_up(previous, None, relative, {}, [], None, notes, matched, conf)
            tr = TimeRange(prev.plan.time.start_ns, prev.plan.time.end_ns, prev.plan.time.text,
                           prev.plan.time.understood, prev.plan.time.span) if prev.plan else None
        if (previous is not None and previous.kind in ("aggregate", "topk", "threshold", "latest") and not kind
                and not listing and (fld is None or marker) and (fld or agg or thr or top_k)):
            # "what was the highest?", "what about humidity?": the previous question with that part changed
            carried = self._carry(previous, fld, tr, filters, group, agg, thr, top_k, order, unit, notes, matched)
            if isinstance(carried, Understanding):
                return carried
            fld, tr, filters, group, agg, thr, top_k, order, unit = carried
        if listing and (thr is not None or agg not in (None, "count", "latest")):
            return self._decline(f"I can list the {listing} that passed a threshold ('which {listing} were above 25 "
                                 "degrees yesterday?') but not count or rank them that way yet.", notes, matched)
        if listing:
            if re.search(r"\bhow\s+many\b|\bnumber\s+of\b", t):
                agg = "count"
            return self._listing(listing, filters, agg, tr, notes, matched, conf, fld)
        if kind == "alerts":
            if re.search(r"\b(?:when|what\s+time)\b", untimed) and re.search(r"\b(?:last|latest|most\s+recent)\b", untimed):
                agg = "latest"  # "when was the last alert": the time of the most recent one
            return self._alerts(tr, filters, agg, notes, matched, conf)
        if kind == "anomalies":
            return self._anomalies(tr, filters, fld, group, top_k, agg, notes, matched, conf)
        if fld is None and previous is not None and previous.field and (thr or agg or group or top_k):
            fld = previous.field
            notes.append(f"{fld}, as in the previous question")
        if fld is None:
            return self._decline("I could not tell which measurement (temperature, humidity, power, ...) you mean.",
                                 notes, matched)
        if agg == "sum" and fld not in CUMULATIVE_FIELDS and (fld in LEVEL_FIELDS or self.vocab.unit(fld) in LEVEL_UNITS):
            # a total of levels or rates (°C, %, W) is no quantity; "total power consumption" is the meter's
            held = self.vocab.fields()
            meter = next((f for f in sorted(CUMULATIVE_FIELDS) if set(held.get(f, [])) & set(held.get(fld, []))), None)
            if meter is None or not re.search(USE_WORDS, t):
                return self._decline(f"A total of {fld} readings is not a quantity: ask for the average, highest or "
                                     f"lowest {fld}.", notes, matched)
            notes.append(f"the total {fld} used is the {meter} meter's: {meter} used (last − first)")
            fld = meter
        ms = self.vocab.fields().get(fld, [])
        st = [s for s in filters.get("sensor_type", []) if s in ms]
        if st:
            ms = st
        for tag in filters:
            ms = [m for m in ms if tag in self.vocab.tags(m)]
        if not ms:
            tags = ", ".join(sorted(filters))
            return self._decline(f"No measurement with {fld} can be filtered by {tags}.", notes, matched)
        ms = self._reporting(ms, filters)
        if not ms:
            where = " ".join(f"{TAG_WORDS.get(k, k)} {', '.join(norm(x) for x in v)}" for k, v in filters.items())
            return self._decline(f"No device {where} reports {fld}.", notes, matched)
        stored_unit = self.vocab.unit(fld)
        if thr is None and top_k is None and not group and agg not in ("latest",) and self._is_bool(ms, fld):
            thr = (">", 0.5, None, False, None)  # "was motion detected": readings where it is true
        threshold = None
        if thr is not None:
            op, given, given_unit, said_degrees, _ = thr
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
            if tm is not None:  # an explicit threshold
                return self._decline("I forecast values (ask 'what will the humidity be tomorrow?'), not whether they "
                                     "will cross a threshold.", notes, matched)
            return self._forecast(ms, fld, tr, filters, agg, unit, stored_unit, notes, matched, conf)
        if tr is not None and tr.start_ns is not None and tr.start_ns >= self.now_ns:
            return self._decline("That time is in the future: I can forecast it (ask 'what will the "
                                 f"{fld} be tomorrow?'), not measure it.", notes, matched)
        if unit == "degF" and stored_unit != "degC":
            unit = None
        return self._plan(ms, fld, agg, tr, filters, group, top_k, order, threshold, unit, stored_unit, t,
                          notes, matched, conf, pooled={x.tag for x, _, _ in excluded})

    def _is_bool(self, ms: list[str], fld: str) -> bool:
        return bool(ms) and self.vocab.field_type(ms[0], fld) in ("bool", "boolean")

    def _field_of_unit(self, unit: str) -> str | None:
        """The one field measured in ``unit`` (the stored units, else the usual field of a unit)."""
        have = self.vocab.fields()
        by_unit = [f for f, u in self.vocab.units.items() if u == unit and f in have]
        if len(by_unit) == 1:
            return by_unit[0]
        usual = UNIT_FIELDS.get(unit)
        return usual if usual in have and not by_unit else None

    def _reporting(self, ms: list[str], filters: dict[str, list[str]]) -> list[str]:
        """The measurements some device matching ``filters`` writes (the battery of dev-00012 is in
        ``motion`` only): all of ``ms`` when nothing is filtered or the devices are not known."""
        if not filters or not self.vocab.devices:
            return ms
        have: set[str] = set()
        for dev, info in self.vocab.devices.items():
            tags = {**info, "device_id": dev}
            if all(tags.get(k) in v for k, v in filters.items()):
                have |= set(filter(None, info.get("measurements", "").split(",")))
        if not have:
            return ms
        return [m for m in ms if m in have]

    def _carry(self, prev: Plan, fld: str | None, tr: TimeRange | None, filters: dict[str, list[str]], group: list[str],
               agg: str | None, thr: Any, top_k: int | None, order: str, unit: str | None, notes: list[str],
               matched: dict[str, Any]) -> Any:
        """A follow-up that names a new field or aggregation ("what about humidity?", "what was the
        highest?"): the previous question's places, time, grouping and ranking carried over."""
        new_field = fld is not None and fld != prev.field
        if new_field and prev.kind == "threshold" and thr is None:
            return self._decline(f"The previous question had a threshold on {prev.field}: say the threshold for {fld}.",
                                 notes, matched)
        if tr is None and (prev.time.start_ns is not None or prev.time.end_ns is not None):
            tr = TimeRange(prev.time.start_ns, prev.time.end_ns, prev.time.text, prev.time.understood, prev.time.span)
        given = set(filters)
        for k, v in prev.filters.items():
            if k in given:
                continue
            if "device_id" in given and k in ("room", "location") or k == "device_id" and given & {"room", "location"}:
                continue  # a device named now replaces the previous place (and a place the previous device)
            filters[k] = list(v)
        if top_k is None and prev.kind == "topk" and thr is None and agg is None:
            top_k, order = prev.top_k, prev.order
            group = group or list(prev.group_by)
        elif not group and prev.kind != "topk":
            group = list(prev.group_by)
        if agg is None and thr is None and prev.kind != "topk":
            keep = prev.aggregation
            if keep == "consumption" and new_field and fld not in CUMULATIVE_FIELDS:
                keep = "mean"
            agg = keep if keep in ("mean", "median", "max", "min", "sum", "count", "latest", "trend", "change",
                                   "consumption") else None
        if thr is None and prev.threshold is not None and not new_field and agg is None and top_k is None:
            th = prev.threshold
            thr = (th.op, th.given, th.given_unit, False, None)
        if unit is None and not new_field and prev.unit != prev.stored_unit:
            unit = prev.unit
        fld = fld or prev.field
        notes.append("a follow-up: the previous question's " + ", ".join(
            w for w, c in (("places", prev.filters), ("time", tr), ("grouping", prev.group_by)) if c) + " kept")
        matched["follow_up"] = True
        return fld, tr, filters, group, agg, thr, top_k, order, unit

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
              stored_unit: str | None, t: str, notes: list[str], matched: dict[str, Any], conf: float,
              pooled: set[str] | None = None) -> Understanding:
        """``pooled``: tags whose several values are one pool ("excluding the garage"), not a comparison."""
        is_bool = self._is_bool(ms, fld)
        kind = "aggregate"
        if threshold is not None:
            kind = "threshold"
            if top_k is not None and group and group[0] in ("room", "location", "device_id"):
                agg = "which"  # "which rooms were above 25 degrees": those with a reading past it
                group = [group[0]]
            elif re.search(r"\bhow\s+long\b|\bduration\b|\bhow\s+much\s+time\b|\bhow\s+many\s+(?:hours|minutes|days)\b", t):
                agg = "how_long"
            elif re.search(r"\bhow\s+many\b|\bhow\s+often\b|\bcount\b|\bnumber\s+of\b", t):
                agg = "count"
            elif re.search(r"^(?:was|were|did|has|have|is)\b|\bever\b", t):
                agg = "ever"
            else:
                agg = "when"
            if agg != "which":
                group = []
            top_k = None
        elif top_k is not None:
            kind = "topk"
            if agg == "latest":
                pass  # "which is the warmest room right now": ranked by each one's latest reading
            elif agg in (None, "max", "min") or (agg == "max" and order == "desc"):
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
            present = re.search(r"^(?:what\s+is|how\s+is|is\s+it|how\s+(?:" + EXTENT_UP + "|" + EXTENT_DOWN + r")\s+(?:is|are))\b", t)
            used = fld in CUMULATIVE_FIELDS and re.search(USE_WORDS, t)
            if present and tr is None and not used:
                agg = "latest"
            elif fld in CUMULATIVE_FIELDS:
                # a meter: what was used over a range is last − first, never the mean meter reading
                agg = "consumption"
            else:
                agg = "mean"
                if is_bool:  # "motion in the hallway by hour": the readings where it is true, counted
                    agg = "count"
        elif agg == "sum" and fld in CUMULATIVE_FIELDS:
            agg = "consumption"
        if agg == "latest" and not group:
            kind = "latest"
        if kind == "aggregate" and fld in CUMULATIVE_FIELDS and agg == "mean" and re.search(USE_WORDS, t):
            agg = "consumption"
        # comparisons: "bedroom vs living room" → grouped by the compared tag
        for tag, vals in filters.items():
            if tag in (pooled or set()):
                continue
            if len(vals) > 1 and tag not in group and kind in ("aggregate", "latest") and agg != "consumption" or (
                    len(vals) > 1 and tag not in group and agg == "consumption"):
                group.append(tag)
                notes.append(f"compared by {tag}: {', '.join(vals)}")
        default = "all" if kind in ("latest",) or agg == "latest" else "last24h"
        if re.search(r"\bever\b|\ball[\s-]time\b|\bon\s+record\b", t) and tr is None:
            default = "all"  # "the highest humidity ever recorded"
        if kind == "threshold" and agg in ("ever",) and tr is None:
            default = "all"
        spec, pen = self._time_spec(tr, default, notes)
        conf -= pen
        if (kind == "latest" or agg == "latest") and tr is None:
            spec = TimeSpec(understood="the latest reading")
        plan = Plan(kind=kind, measurements=tuple(ms), field=fld, aggregation=agg,
                    time=spec, filters={k: tuple(v) for k, v in filters.items()}, group_by=tuple(group),
                    top_k=top_k, order=order, threshold=threshold, unit=unit or stored_unit,
                    field_kind="boolean" if is_bool else None,
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
                 notes: list[str], matched: dict[str, Any], conf: float, fld: str | None = None) -> Understanding:
        group: tuple[Any, ...] = ()
        if what in ("rooms",):
            group = ("room",)
        elif what in ("locations", "homes"):
            group = ("location",)
        count = agg == "count"
        ms = [m for m in self.vocab.measurements if "device_id" in self.vocab.tags(m)]
        if fld is not None:  # "how many devices report temperature": those of the measurements holding it
            ms = [m for m in ms if m in self.vocab.fields().get(fld, [])]
            if not ms:
                return self._decline(f"No device reports {fld}.", notes, matched)
            notes.append(f"devices of the measurements with {fld}: {', '.join(ms)}")
        plan = Plan(kind="devices", measurements=tuple(ms), aggregation="count_devices" if count else "list",
                    filters={k: tuple(v) for k, v in filters.items()}, group_by=group,
                    time=TimeSpec(understood="devices that sent telemetry"))
        return Understanding("query", plan=plan, notes=notes, confidence=round(conf, 2), matched=matched)

    def _alerts(self, tr: TimeRange | None, filters: dict[str, list[str]], agg: str | None, notes: list[str],
                matched: dict[str, Any], conf: float) -> Understanding:
        spec, _ = self._time_spec(tr, "all", notes)
        plan = Plan(kind="alerts", aggregation="count" if agg in ("count", "sum") else "latest" if agg == "latest" else "list",
                    time=spec,
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
