"""What every conformance check returns and raises: one report shape and one error for all kinds.

Every ``check_*`` of :mod:`treadle.testing` runs its kind's rules in order and either raises
:class:`ConformanceError` at the first rule broken (an ``AssertionError``, so pytest shows it as
a failure) or returns a :class:`ConformanceReport`: the rules that passed, those skipped with
the reason (a rule that does not apply, or needs an input the caller did not give), and the
kind's own findings in ``details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

__all__ = ["ConformanceError", "ConformanceReport", "Rule", "RuleRunner"]


class ConformanceError(AssertionError):
    """A plugin object breaks its kind's contract; the message names the rule and the fix.

    :ivar kind: the registry kind (``losses``, ``loggers``, ...).
    :ivar subject: what was checked (a class name or registered name).
    :ivar rule: the rule broken, as listed in the kind's ``RULES``.
    """

    def __init__(self, message: str, *, kind: str = "", subject: str = "", rule: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.subject = subject
        self.rule = rule


@attrs.frozen
class Rule:
    """One rule a kind's check enforces.

    :ivar name: its short name, used in messages and reports (``accumulation invariance``).
    :ivar summary: what it demands, in one sentence, for the docs and ``--help``.
    """

    name: str
    summary: str


@attrs.frozen(kw_only=True)
class ConformanceReport:
    """What a ``check_*`` found: the same shape for every kind.

    :ivar kind: the registry kind checked (``losses``, ``exporters``, ...).
    :ivar subject: what was checked (a class name, or ``name (Class)``).
    :ivar passed: the rules that ran and held, in order.
    :ivar skipped: ``(rule, reason)`` for the rules that did not run.
    :ivar details: the kind's findings (``accumulation``, ``max_abs_error``, ...), plain data.
    """

    kind: str
    subject: str
    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def summary(self) -> str:
        """``7 passed, 1 skipped (resume: no read_steps)``: one line for tables."""
        text = f"{len(self.passed)} passed"
        if self.skipped:
            reasons = "; ".join(f"{rule}: {reason}" for rule, reason in self.skipped)
            text += f", {len(self.skipped)} skipped ({reasons})"
        return text


class RuleRunner:
    """Collects a report while a check runs its rules; raises for the first one broken.

    :param kind: the registry kind.
    :param subject: what is checked, for messages.
    :param rules: the kind's rules; every rule passed, skipped or failed must be one of them.
    :param context: said after the subject in messages (``classification layout``).
    """

    def __init__(self, kind: str, subject: str, rules: tuple[Rule, ...], context: str = "") -> None:
        self.kind = kind
        self.subject = subject
        self._names = [rule.name for rule in rules]
        self.context = context
        self.passed: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.details: dict[str, Any] = {}

    def _known(self, rule: str) -> str:
        if rule not in self._names:  # a programming error of the kit itself
            msg = f"{rule!r} is no rule of {self.kind}: {', '.join(self._names)}"
            raise ValueError(msg)
        return rule

    def passes(self, rule: str) -> None:
        """Record ``rule`` as held."""
        self.passed.append(self._known(rule))

    def skip(self, rule: str, reason: str) -> None:
        """Record ``rule`` as not run, with the reason."""
        self.skipped.append((self._known(rule), reason))

    def error(self, rule: str, problem: str) -> ConformanceError:
        """The error for ``rule`` broken: ``"FocalLoss fails 'valid batch' (...): problem"``."""
        context = f" ({self.context})" if self.context else ""
        message = f"{self.subject} fails '{self._known(rule)}'{context}: {problem}"
        return ConformanceError(message, kind=self.kind, subject=self.subject, rule=rule)

    def fail(self, rule: str, problem: str) -> NoReturn:
        """Raise :meth:`error`."""
        raise self.error(rule, problem)

    def report(self) -> ConformanceReport:
        """The report of the rules recorded so far."""
        return ConformanceReport(
            kind=self.kind,
            subject=self.subject,
            passed=tuple(self.passed),
            skipped=tuple(self.skipped),
            details=dict(self.details),
        )
