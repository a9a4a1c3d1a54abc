"""Rule files (TOML or YAML): load them into a :class:`~sensorium.rules.model.RuleSet`, or check
them and list every problem with its line number.

A rule file is a list of rules (see ``default_rules.toml`` beside this module for a documented
example)::

    [[rules]]
    name = "temperature-high"
    kind = "threshold"
    measurement = "climate"
    field = "temperature"
    above = { warning = 50, critical = 60 }
    deadband = 1.0
    for = "1m"

or in YAML ``rules: [{name: ..., kind: threshold, ...}]``. ``check_file`` never raises on a bad
file: it returns the problems (unknown key with a suggestion, bad duration, levels out of order,
duplicate names, unknown kind, missing key, syntax errors), each with its line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sensorium.errors import ConfigError
from sensorium.rules.model import KINDS, RULE_TYPES, RuleSet, fmt_num, suggest

Format = Literal["toml", "yaml"]
_TOP_KEYS = ("rules",)
_Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of a rule file, at a 1-based line."""

    line: int
    message: str
    path: str = ""
    rule: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.path else f"line {self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message, "rule": self.rule, "path": self.path}


class RuleFileError(ConfigError):
    """A rule file that cannot be used; ``problems`` lists why, with line numbers."""

    code = "invalid_rules"

    def __init__(self, path: str, problems: list[Problem]) -> None:
        first = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(f"bad rule file {path}: {first}{more}", path=path)
        self.problems = problems


# --------------------------------------------------------------------------- public face


def format_of(path: str | Path) -> Format:
    suffix = Path(path).suffix.lower()
    return "yaml" if suffix in (".yaml", ".yml") else "toml"


def check_text(text: str, fmt: Format = "toml", path: str = "<rules>") -> list[Problem]:
    """Every problem of a rule file's text, sorted by line (empty: the file is good)."""
    return _check(text, fmt, path)[1]


def check_file(path: str | Path) -> list[Problem]:
    """Every problem of a rule file, sorted by line (empty: the file is good)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        return [Problem(1, f"cannot read the file: {e.strerror or e}", str(p))]
    except UnicodeDecodeError as e:
        return [Problem(1, f"not UTF-8 text: {e.reason}", str(p))]
    return check_text(text, format_of(p), str(p))


def parse_rules(text: str, fmt: Format = "toml", path: str = "<rules>") -> RuleSet:
    """The rules of a file's text; raises :class:`RuleFileError` listing every problem."""
    ruleset, problems = _check(text, fmt, path)
    if problems or ruleset is None:
        raise RuleFileError(path, problems)
    return ruleset


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rules of a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file; None: the built-in
    example rules (:func:`load_default_rules`)."""
    if path is None:
        return load_default_rules()
    problems = []
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(1, f"cannot read the file: {e}", str(p)))
        raise RuleFileError(str(p), problems) from e
    return parse_rules(text, format_of(p), str(p))


def default_rules_text() -> str:
    return resources.files("sensorium.rules").joinpath("default_rules.toml").read_text(encoding="utf-8")


def load_default_rules() -> RuleSet:
    """The built-in example rules (``default_rules.toml``, shipped with the package)."""
    return parse_rules(default_rules_text(), "toml", "default_rules.toml")


# --------------------------------------------------------------------------- checking


def _check(text: str, fmt: Format, path: str) -> tuple[RuleSet | None, list[Problem]]:
    problems: list[Problem] = []

    def add(line: int, message: str, rule: str | None = None) -> None:
        problems.append(Problem(max(1, line), message, path, rule))

    try:
        if fmt == "yaml":
            data, lines = _parse_yaml(text)
        else:
            data, lines = _parse_toml(text)
    except _SyntaxProblem as e:
        return None, [Problem(e.line, e.message, path)]

    def line_of(loc: _Loc) -> int:
        while loc:
            if loc in lines:
                return lines[loc]
            loc = loc[:-1]
        return 1

    if data is None:
        data = {}
    if not isinstance(data, dict):
        add(1, "the file must hold a table with a 'rules' list")
        return None, problems
    for key in data:
        if key not in _TOP_KEYS:
            add(line_of((str(key),)), f"unknown top-level key '{key}'{suggest(str(key), _TOP_KEYS)}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        add(line_of(("rules",)), "'rules' must be a list of tables ([[rules]] in TOML)")
        return None, problems

    built: list[Any] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        here: _Loc = ("rules", i)
        if not isinstance(raw, dict):
            add(line_of(here), f"rule #{i + 1} must be a table of keys, not {type(raw).__name__}")
            continue
        name = raw.get("name")
        label = f"rule '{name}'" if isinstance(name, str) and name else f"rule #{i + 1}"
        rname = name if isinstance(name, str) else None
        if isinstance(name, str) and name:
            if name in names:
                add(
                    line_of((*here, "name")),
                    f"duplicate rule name '{name}' (first defined on line {names[name]})",
                    rname,
                )
            else:
                names[name] = line_of((*here, "name"))
        kind = raw.get("kind")
        if kind is None:
            add(line_of(here), f"{label}: missing 'kind' (one of {', '.join(KINDS)})", rname)
            continue
        if not isinstance(kind, str) or kind not in RULE_TYPES:
            add(
                line_of((*here, "kind")),
                f"{label}: unknown kind '{kind}'{suggest(str(kind), KINDS)}; kinds are {', '.join(KINDS)}",
                rname,
            )
            continue
        model = RULE_TYPES[kind]
        try:
            built.append(model.model_validate(raw))
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                add(line_of((*here, *loc)), f"{label}: {_message(err, model, loc)}", rname)
    problems.sort(key=lambda p: p.line)
    if problems:
        return None, problems
    return RuleSet(rules=tuple(built)), problems


def _keys_of(model: type[Any]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _message(err: Any, model: type[Any], loc: _Loc) -> str:
    kind = err["type"]
    where = ".".join(str(x) for x in loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        if len(loc) == 1:
            return f"unknown key '{key}'{suggest(key, _keys_of(model))}"
        if len(loc) == 2 and loc[0] in ("first", "then", "condition"):
            return f"unknown key '{key}' in '{loc[0]}'{suggest(key, ('gt', 'ge', 'lt', 'le'))}"
        return f"unknown key '{where}'"
    if kind == "missing":
        return f"missing '{where}'"
    ctx = err.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        if isinstance(limit, int | float) and not isinstance(limit, bool):
            limit = fmt_num(float(limit))
        return f"'{where}' must be {bounds[kind]} {limit}, not {err['input']!r}"
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        what = "a whole number" if kind.startswith("int") else "a number"
        return f"'{where}' must be {what}, not {err['input']!r}"
    if kind in ("string_type", "bool_type", "bool_parsing", "dict_type", "tuple_type", "list_type"):
        expected = {"string": "a string", "bool": "true or false", "dict": "a table", "tuple": "a list", "list": "a list"}
        return f"'{where}' must be {expected[kind.split('_')[0]]}, not {err['input']!r}"
    msg = str(err["msg"])
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    if where and not msg.startswith(f"'{where}'") and where not in msg:
        return f"'{where}': {msg}"
    return msg


class _SyntaxProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# --------------------------------------------------------------------------- TOML


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_BARE_KEY = r'(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY_LINE = re.compile(rf"^\s*({_BARE_KEY}(?:\s*\.\s*{_BARE_KEY})*)\s*=\s*(.*)$")
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_BARE_KEY}(?:\s*\.\s*{_BARE_KEY})*)\s*\]\]?\s*(#.*)?$")
_INLINE_KEY = re.compile(rf"({_BARE_KEY}(?:\s*\.\s*{_BARE_KEY})*)\s*=")


def _parse_toml(text: str) -> tuple[Any, dict[_Loc, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_AT.search(msg)
        line = int(m.group(1)) if m else 1
        raise _SyntaxProblem(line, f"TOML syntax error: {_TOML_AT.sub('', msg).strip()}") from e
    return data, _toml_lines(text)


def _split_key(key: str) -> list[str]:
    parts = re.findall(_BARE_KEY, key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _toml_lines(text: str) -> dict[_Loc, int]:
    """Line of every key path (best effort; enough for messages)."""
    lines: dict[_Loc, int] = {}
    arrays: dict[tuple[str, ...], int] = {}  # array-of-tables path -> current index
    table: _Loc = ()
    skip_until: str | None = None
    depth = 0
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if skip_until is not None:  # inside a multi-line string
            if skip_until in line:
                skip_until = None
            continue
        if depth > 0:  # inside a multi-line array
            depth += _bracket_depth(line)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        h = _HEADER.match(line)
        if h:
            parts = _split_key(h.group(2))
            if h.group(1) == "[[":
                key = tuple(parts)
                idx = arrays.get(key, -1) + 1
                arrays[key] = idx
                table = (*_resolve(parts[:-1], arrays), parts[-1], idx)
            else:
                table = _resolve(parts, arrays)
            lines.setdefault(table, no)
            continue
        m = _KEY_LINE.match(line)
        if not m:
            continue
        path = (*table, *_split_key(m.group(1)))
        lines.setdefault(path, no)
        value = m.group(2)
        if value.startswith('"""') or value.startswith("'''"):
            quote = value[:3]
            if value.count(quote) < 2:
                skip_until = quote
            continue
        if value.startswith("{"):
            for k in _INLINE_KEY.finditer(value):
                lines.setdefault((*path, *_split_key(k.group(1))), no)
        elif value.startswith("["):
            depth = _bracket_depth(value)
    return lines


def _resolve(parts: list[str], arrays: dict[tuple[str, ...], int]) -> _Loc:
    """A dotted table name with the current index of every array of tables it passes."""
    out: list[str | int] = []
    for i, p in enumerate(parts):
        out.append(p)
        key = tuple(parts[: i + 1])
        if key in arrays:
            out.append(arrays[key])
    return tuple(out)


def _bracket_depth(s: str) -> int:
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", s.split(" #")[0])
    return s.count("[") - s.count("]")


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str) -> tuple[Any, dict[_Loc, int]]:
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - PyYAML is a dependency
        raise _SyntaxProblem(1, "YAML rule files need PyYAML: pip install pyyaml") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e)
        raise _SyntaxProblem(line, f"YAML syntax error: {problem}") from e
    lines: dict[_Loc, int] = {}
    dupes: list[tuple[int, str]] = []

    def walk(n: Any, path: _Loc) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = str(k.value)
                if key in seen:
                    dupes.append((k.start_mark.line + 1, key))
                seen.add(key)
                lines.setdefault((*path, key), k.start_mark.line + 1)
                walk(v, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    if dupes:
        line, key = dupes[0]
        raise _SyntaxProblem(line, f"YAML: key '{key}' given twice")
    return data, lines
