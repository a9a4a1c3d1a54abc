"""Data quality: rules, unit normalisation, vectorised validation, dead letters and the report."""

from sensorium.quality.deadletters import DeadLetter, DeadLetterStore
from sensorium.quality.report import quality_report, render_report
from sensorium.quality.rules import DEFAULT_RULES, Rule, effective_rules, rules_for
from sensorium.quality.units import IncompatibleUnit, UnknownUnit, convert, resolve_unit
from sensorium.quality.validate import ValidationResult, Validator

__all__ = [
    "DEFAULT_RULES",
    "DeadLetter",
    "DeadLetterStore",
    "IncompatibleUnit",
    "Rule",
    "UnknownUnit",
    "ValidationResult",
    "Validator",
    "convert",
    "effective_rules",
    "quality_report",
    "render_report",
    "resolve_unit",
    "rules_for",
]
