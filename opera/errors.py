"""Errors every layer may raise, defined below all of them so that raising one imports nothing."""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key path and the allowed values."""


class StageError(RuntimeError):
    """A stage cannot run on its inputs; the message says which file and why."""
