"""User-facing errors.

Anything a user can cause (bad file, bad config, missing checkpoint) raises ``ZarrsegError``
with one line naming the file and the problem; the CLI prints that line and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class ZarrsegError(Exception):
    """An error caused by the user's input; its message is shown as one line."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        full = f"{self.path}: {message}" if self.path else message
        super().__init__(" ".join(full.split()))  # one line, always


class InputError(ZarrsegError):
    """An input file is missing, truncated, of the wrong kind or cannot be interpreted."""


class ConfigError(ZarrsegError):
    """A configuration value or parameter set is invalid."""


class OutputError(ZarrsegError):
    """An output cannot be written (read-only folder, no permission, disk full)."""
