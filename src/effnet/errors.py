"""Errors users see as one line (``effnet: error: ...``), each with its exit code.

A leaf module every room may import: it imports nothing of ours.
"""

from __future__ import annotations


class EffnetError(Exception):
    """A problem with the user's input or environment, not a bug: no traceback is shown."""

    exit_code = 1
    #: how the one line starts after ``effnet: `` (a stop the user asked for is no error)
    label = "error: "


class UsageError(EffnetError, ValueError):
    """Wrong arguments (unknown model, bad option value): exit code 2, like argparse."""

    exit_code = 2
