"""Automation files (TOML ``[[automations]]`` or YAML ``automations: [...]``): load them, or check
them and list every problem with its line number (``sensorium automations check FILE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sensorium.automations.model import Automation
from sensorium.errors import ConfigError
from sensorium.rules.loader import (
    Problem,
    _Loc,
    _parse_toml,
    _parse_yaml,
    _SyntaxProblem,
    format_of,
)


def check_text(text: str, fmt: str = "toml", path: str = "<automations>") -> tuple[list[Automation], list[Problem]]:
    """(automations, problems sorted by line); automations only when there is no problem."""
    problems: list[Problem] = []
    try:
        data, lines = _parse_yaml(text) if fmt == "yaml" else _parse_toml(text)
    except _SyntaxProblem as e:
        return [], [Problem(e.line, e.message, path)]

    def line_of(loc: _Loc) -> int:
        while loc:
            if loc in lines:
                return lines[loc]
            loc = loc[:-1]
        return 1

    data = data or {}
    if not isinstance(data, dict) or not isinstance(data.get("automations", []), list):
        return [], [Problem(1, "the file must hold an 'automations' list ([[automations]] in TOML)", path)]
    for key in data:
        if key != "automations":
            problems.append(Problem(line_of((str(key),)), f"unknown top-level key '{key}'", path))
    built: list[Automation] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data.get("automations", [])):
        here: _Loc = ("automations", i)
        label = f"automation '{raw.get('name')}'" if isinstance(raw, dict) and raw.get("name") else f"automation #{i + 1}"
        try:
            a = Automation.model_validate(raw)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(str(x) if not isinstance(x, int) else x for x in err["loc"])
                where = ".".join(str(x) for x in err["loc"])
                problems.append(Problem(line_of((*here, *loc)), f"{label}: {where}: {err['msg']}", path))
            continue
        if a.name in seen:
            problems.append(Problem(line_of((*here, "name")), f"duplicate automation name '{a.name}' "
                                    f"(first on line {seen[a.name]})", path))
            continue
        seen[a.name] = line_of((*here, "name"))
        built.append(a)
    problems.sort(key=lambda p: p.line)
    return ([] if problems else built), problems


def check_file(path: str | Path) -> tuple[list[Automation], list[Problem]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(1, f"cannot read the file: {e}", str(p))]
    return check_text(text, format_of(p), str(p))


def load_file(path: str | Path) -> list[Automation]:
    """The automations of a file; :class:`ConfigError` listing every problem."""
    autos, problems = check_file(path)
    if problems:
        raise ConfigError(
            "automations file has problems:\n" + "\n".join(str(p) for p in problems),
            problems=[str(p) for p in problems],
        )
    return autos


def parse_definition(body: Any) -> Automation:
    """One automation from a JSON body (the API); :class:`~sensorium.errors.BadRequest` with every
    problem's location."""
    from sensorium.errors import BadRequest

    try:
        return Automation.model_validate(body)
    except ValidationError as e:
        msgs = [f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()]
        raise BadRequest("invalid automation: " + "; ".join(msgs), problems=msgs) from None
