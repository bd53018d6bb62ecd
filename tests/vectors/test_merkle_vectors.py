"""Conformance: every RFC 6962 proof vector of transparency-dev/merkle through ``envelope.merkle``.

The vectors (inclusion, consistency and their subtree variants, positive and negative) live in
``../shared/vectors/merkle`` (Apache-2.0, not copied into the project); skipped with a reason when absent.
Each case is one test, named by its file, so a failure says which vector.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from envelope.errors import InvalidProof
from envelope.merkle import (
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)
from tests.support.shared import missing_reason, shared_path

VECTORS = shared_path("vectors", "merkle")
KINDS = ("inclusion", "consistency", "subtreeinclusion", "subtreeconsistency")

pytestmark = pytest.mark.skipif(VECTORS is None, reason=missing_reason("vectors", "merkle"))


def _cases(kind: str) -> list[Any]:
    if VECTORS is None:
        return []
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(f, id=str(f.relative_to(VECTORS / kind))) for f in files]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(doc: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in (doc.get("proof") or [])]


def _run(kind: str, doc: dict[str, Any]) -> None:
    if kind == "inclusion":
        verify_inclusion(doc["leafIdx"], doc["treeSize"], _b64(doc["leafHash"]), _proof(doc), _b64(doc["root"]))
    elif kind == "consistency":
        verify_consistency(doc["size1"], doc["size2"], _proof(doc), _b64(doc["root1"]), _b64(doc["root2"]))
    elif kind == "subtreeinclusion":
        verify_subtree_inclusion(doc["leafIdx"], doc["start"], doc["end"], _b64(doc["leafHash"]), _proof(doc),
                                 _b64(doc["root"]))
    else:
        verify_subtree_consistency(doc["start"], doc["end"], doc["size"], _proof(doc), _b64(doc["root1"]),
                                   _b64(doc["root2"]))


def _check(kind: str, path: Path) -> None:
    doc = json.loads(path.read_text())
    if doc["wantErr"]:
        with pytest.raises(InvalidProof):
            _run(kind, doc)
    else:
        _run(kind, doc)


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vector(path: Path) -> None:
    _check("inclusion", path)


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vector(path: Path) -> None:
    _check("consistency", path)


@pytest.mark.parametrize("path", _cases("subtreeinclusion"))
def test_subtree_inclusion_vector(path: Path) -> None:
    _check("subtreeinclusion", path)


@pytest.mark.parametrize("path", _cases("subtreeconsistency"))
def test_subtree_consistency_vector(path: Path) -> None:
    _check("subtreeconsistency", path)


def test_every_kind_has_cases() -> None:
    """A moved or emptied vector folder must not pass silently."""
    assert VECTORS is not None
    counts = {k: len(_cases(k)) for k in KINDS}
    assert all(n > 10 for n in counts.values()), counts
    assert sum(counts.values()) >= 500, counts
