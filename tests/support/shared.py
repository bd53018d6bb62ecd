"""Where the shared reference material lives (specs, third-party vectors): never copied into the project.

``$EDGE_SHARED_DIR`` if set, else ``shared/`` beside the clone (``<repo>/../shared``), else beside the folder
of worktrees (``<repo>/../../shared``). Tests that read it skip with a reason naming the paths tried.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def candidates() -> list[Path]:
    env = os.environ.get("EDGE_SHARED_DIR")
    paths = [Path(env)] if env else []
    return [*paths, REPO.parent / "shared", REPO.parent.parent / "shared"]


def shared_path(*parts: str) -> Path | None:
    """The first existing ``<shared>/<parts...>``, or None."""
    for base in candidates():
        p = base.joinpath(*parts)
        if p.exists():
            return p
    return None


def missing_reason(*parts: str) -> str:
    tried = ", ".join(str(b.joinpath(*parts)) for b in candidates())
    return f"shared reference material {'/'.join(parts)} not found (tried {tried}); it is not copied into the project"
