"""The demo: broker, throwaway fleet CA, agent and aggregator wired together on one machine.

Its own package because it is the one place that wires ``agent`` and ``aggregator`` together: an agent
host never imports the aggregator, so ``agent/`` must not import this package either. ``edge-agent demo``
reaches it by exec'ing ``python -m demo`` (agent/cli.py); ``edge-demo`` is the same command.
"""

from __future__ import annotations

__all__: list[str] = []
