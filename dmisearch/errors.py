"""Errors a user can act on.

Every error a user may see names the culprit, the value and the fix. The CLI prints
``DmisearchError`` as one paragraph without a traceback (``--debug`` shows it); any other
exception is a bug in dmisearch or in a plugin.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DmisearchError(Exception):
    """Base class of every error that is the user's to fix (bad input, unknown names...)."""

    def cli_message(self) -> str:
        """The message as the command line prints it (options named as flags)."""
        return str(self)


class PluginError(DmisearchError):
    """A plugin is broken: it fails to load, registers a malformed component, or clashes."""


class UnknownComponentError(DmisearchError, KeyError):
    """A component name that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StudyFileError(DmisearchError):
    """A study file (or its command-line overrides) is invalid; lists every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}, nothing was run:\n{lines}")


class StudyNotFoundError(DmisearchError):
    """No study of that name in the storage looked at: names the storage, the studies it
    holds, and how to point at the right one (``storage=`` in Python, ``--storage`` on the
    command line)."""

    def __init__(self, name: str, where: str, known: Iterable[str] = ()):
        self.name, self.where, self.known = name, where, sorted(known)
        super().__init__(self._text("storage='URL'"))

    def _text(self, how: str) -> str:
        there = (f"it holds {', '.join(repr(k) for k in self.known)}" if self.known
                 else "it holds no study")
        near = did_you_mean(self.name, self.known)
        return (f"no study '{self.name}' in {self.where} ({there}{near}); pass the storage "
                f"the study was run with ({how}), or run it first")

    def cli_message(self) -> str:
        return self._text("--storage URL")


class StudyMismatchError(DmisearchError):
    """The study file disagrees with the study already stored under the same name."""


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when ``value`` is close to one of ``known``, else ''."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PreflightError(StudyFileError):
    """A searched architecture fails when run once on two samples before the first trial
    (``dmisearch.preflight``); lists every problem found."""
