"""Alert rules (model, file loader, vectorised engine), the alert store and notification sinks.

::

    from sensorium.rules import load_rules, parse_rules, check_file, RuleSet, ThresholdRule
"""

from sensorium.rules.loader import (
    Problem,
    RuleFileError,
    check_file,
    check_text,
    load_rules,
    parse_rules,
)
from sensorium.rules.model import (
    AbsenceRule,
    Condition,
    CountRule,
    RateRule,
    RuleSet,
    SequenceRule,
    ThresholdRule,
)
from sensorium.rules.types import Transition

__all__ = [
    "AbsenceRule",
    "Condition",
    "CountRule",
    "Problem",
    "RateRule",
    "RuleFileError",
    "RuleSet",
    "SequenceRule",
    "ThresholdRule",
    "Transition",
    "check_file",
    "check_text",
    "load_rules",
    "parse_rules",
]
