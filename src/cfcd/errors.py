"""The project's own errors: what a user can act on (bad input, bad paths, bad settings,
descriptors that do not match).

The ``cfcd`` command prints a ``CfcdError`` as one line and exits with status 2; anything else
is a bug and keeps its traceback. Each subclass also inherits the builtin it replaces, so
``except ValueError`` and ``except FileNotFoundError`` keep catching them. Checks of the code's
own invariants raise builtins, never these.

This module imports nothing, so every layer can use it.
"""

from __future__ import annotations


class CfcdError(Exception):
    """An error whose message tells a user what was wrong and what to do."""


class ConfigError(CfcdError, ValueError):
    """A setting, an option or a recipe value that is not valid."""


class InputError(CfcdError, ValueError):
    """Input data that cannot be used: a file of the wrong kind or shape, an empty set."""


class MismatchError(CfcdError, ValueError):
    """Things that must agree do not: descriptors of another model, settings or image set."""


class NotFound(CfcdError, FileNotFoundError):
    """A file, folder or named thing that is not there."""


class AlreadyExists(CfcdError, FileExistsError):
    """An output that would overwrite something already there."""


class Unavailable(CfcdError, RuntimeError):
    """What the environment lacks to do it: a package, a device, a server."""


class Conflict(CfcdError, RuntimeError):
    """Another writer changed it first, or holds it: load again and repeat, or wait."""
