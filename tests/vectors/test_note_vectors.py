"""Conformance: the worked examples of C2SP signed-note and tlog-checkpoint through ``envelope.note``.

The specs live in ``../shared/specs/c2sp`` (BSD-1-Clause, not copied into the project); the examples are
extracted from the Markdown, so a changed spec text changes the test input. Skipped when absent.
"""

from __future__ import annotations

import re

import pytest

from envelope.errors import InvalidNote
from envelope.note import NoteVerifier, open_note, parse_checkpoint, parse_note
from tests.support.shared import missing_reason, shared_path

SPECS = shared_path("specs", "c2sp")
pytestmark = pytest.mark.skipif(SPECS is None, reason=missing_reason("specs", "c2sp"))


def _spec(name: str) -> str:
    assert SPECS is not None
    return (SPECS / name).read_text()


def _blocks(text: str) -> list[str]:
    return [b + "\n" if not b.endswith("\n") else b for b in re.findall(r"```\n(.*?)```", text, re.S)]


def test_signed_note_worked_example_verifies() -> None:
    text = _spec("signed-note.md")
    example = text[text.index("### Example"):]
    vkey = re.search(r"^    (\S+\+[0-9a-f]{8}\+\S+)$", example, re.M)
    assert vkey is not None
    verifier = NoteVerifier.from_vkey(vkey.group(1))
    assert verifier.vkey() == vkey.group(1)
    note_bytes = _blocks(example)[0].encode()
    note = open_note(note_bytes, [verifier])
    assert note.text == "This is an example message.\n"
    assert note.verified_by == ("example.com/foo",)
    tampered = note_bytes.replace(b"example message", b"example massage")
    with pytest.raises(InvalidNote):
        open_note(tampered, [verifier])


def test_signed_note_first_example_parses() -> None:
    """The poem at the top of the spec: a valid note whose key is not given (so it only parses)."""
    note = parse_note(_blocks(_spec("signed-note.md"))[0].encode())
    assert note.text.startswith("Ognuno sta solo") and "\n\ned è subito sera.\n" in note.text
    assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]


def test_checkpoint_example_parses() -> None:
    note = parse_note(_blocks(_spec("tlog-checkpoint.md"))[0].encode())
    cp = parse_checkpoint(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.body() == note.text
