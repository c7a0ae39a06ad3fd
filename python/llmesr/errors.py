"""The errors a user can fix. The commands print these (and the data core's `DataError` and OS errors,
which name their file) as one line; anything else is a bug in llmesr or a library it uses, and is
reported as one, with a short traceback (`--debug`: the whole one)."""

from __future__ import annotations


class LlmesrError(Exception):
    """Base of the errors a user can fix."""


class SettingsError(LlmesrError, ValueError):
    """A setting, argument or input that cannot be used as given (also a ValueError)."""


class ExternalError(LlmesrError, RuntimeError):
    """A failure outside llmesr the user can act on: a remote encoder, a missing compiler."""
