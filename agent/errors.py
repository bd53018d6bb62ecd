"""Errors of the agent, split by who is at fault: the operator's input (config) or our own I/O."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every agent error."""


class ConfigError(AgentError):
    """The config file is invalid. ``problems`` holds one ``(key path, message)`` per mistake."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {key}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class SourceError(AgentError):
    """A sensor source failed in a way it cannot recover from by itself."""


class InferenceError(AgentError):
    """The model cannot be loaded or run (missing runtime, wrong model, shape mismatch)."""


class OutboxError(AgentError):
    """The outbox database cannot be written or read (disk full, corruption, permissions)."""
