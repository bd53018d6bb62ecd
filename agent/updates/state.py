"""What the updater must remember across restarts and power cuts: one small JSON file, replaced atomically.

Per model id: the version floor (the highest version that passed its health window: nothing at or below it
is ever taken again), the committed model (version, digest and the files it was verified into), the versions
refused or reverted with their reasons (never retried), and an unfinished trial (a switch whose health window
did not end: a restart runs the committed model and counts the attempt). Globally: the last good time, the
latest reference time a verified refresh accepted (a clock for boards without an RTC).

Every change is written with ``provisioning.atomic_write`` (temp file, fsync, rename, fsync of the directory)
before the agent acts on it, so a kill -9 at any point leaves either the old state or the new one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Committed", "ModelState", "UpdateState"]

FORMAT = 1
MAX_TRIAL_ATTEMPTS = 2  # a trial interrupted this often (crash, power cut) is refused like a failed one


@dataclass
class Committed:
    """A model version that passed its health window, verified into ``file`` (relative to the updates dir)."""

    version: int
    sha256: str
    file: str
    metadata: str


@dataclass
class ModelState:
    """Update state of one model id."""

    floor: int = 0
    committed: Committed | None = None
    refused: dict[int, str] = field(default_factory=dict)  # golden vectors, download, load: never retried
    reverted: dict[int, str] = field(default_factory=dict)  # failed its health window: never retried
    trial: dict[str, Any] | None = None  # {"version", "sha256", "attempts"} while a health window runs

    def never(self) -> dict[int, str]:
        """Versions this device will not take again, with the reason."""
        return {**self.refused, **{v: f"reverted: {r}" for v, r in self.reverted.items()}}


@dataclass
class UpdateState:
    """The whole file. ``load`` never raises for a missing file; a corrupt one is kept aside and reset."""

    path: str
    last_good_time: float | None = None
    models: dict[str, ModelState] = field(default_factory=dict)

    def model(self, model_id: str) -> ModelState:
        return self.models.setdefault(model_id, ModelState())

    @classmethod
    def load(cls, path: str) -> UpdateState:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"expected format {FORMAT}, got {str(doc)[:60]!r}")
            models = {}
            for mid, m in doc.get("models", {}).items():
                c = m.get("committed")
                models[str(mid)] = ModelState(
                    floor=int(m.get("floor", 0)),
                    committed=Committed(int(c["version"]), str(c["sha256"]), str(c["file"]), str(c["metadata"]))
                    if c else None,
                    refused={int(k): str(v) for k, v in m.get("refused", {}).items()},
                    reverted={int(k): str(v) for k, v in m.get("reverted", {}).items()},
                    trial=dict(m["trial"]) if m.get("trial") else None)
            lg = doc.get("last_good_time")
            return cls(path, float(lg) if lg is not None else None, models)
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # Keep the evidence, start from the shipped model: losing the floor is better than not starting.
            aside = f"{path}.corrupt"
            log.error("update state %s is unreadable (%s): moved to %s, starting from the shipped models", path, e,
                      aside)
            try:
                os.replace(path, aside)
            except OSError:
                pass
            return cls(path)

    def save(self) -> None:
        from provisioning import atomic_write  # noqa: PLC0415

        doc = {"format": FORMAT, "last_good_time": self.last_good_time,
               "models": {mid: {"floor": m.floor, "committed": asdict(m.committed) if m.committed else None,
                                "refused": {str(k): v for k, v in m.refused.items()},
                                "reverted": {str(k): v for k, v in m.reverted.items()},
                                "trial": m.trial}
                          for mid, m in self.models.items()}}
        atomic_write(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), mode=0o644)
