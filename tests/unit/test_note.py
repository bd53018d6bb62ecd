"""Properties of ``envelope.note``: what we sign we verify, every other byte string is refused cleanly."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from envelope.errors import InvalidNote, MalformedNote
from envelope.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    sign_note,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = NoteSigner("example.net/log", KEY)
OTHER = NoteSigner("example.net/witness", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))

texts = st.text(st.characters(codec="utf-8", blacklist_characters="\r\x7f",
                              min_codepoint=0x20) | st.just("\n"), min_size=1, max_size=200).map(lambda t: t + "\n")


@given(texts)
def test_signed_text_verifies(text: str) -> None:
    note = open_note(sign_note(text, [SIGNER]), [SIGNER.verifier])
    assert note.text == text and note.verified_by == (SIGNER.name,)


@given(st.binary(max_size=300))
def test_garbage_is_refused_with_our_errors(data: bytes) -> None:
    try:
        open_note(data, [SIGNER.verifier])
    except (MalformedNote, InvalidNote):
        pass


@given(st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32))
def test_checkpoint_round_trip(size: int, root: bytes) -> None:
    cp = Checkpoint("example.net/log", size, root)
    got, note = open_checkpoint(sign_checkpoint(cp, SIGNER), [SIGNER.verifier], origin="example.net/log")
    assert got == cp and parse_checkpoint(note.text) == cp


def test_unknown_keys_are_ignored_known_failures_reject() -> None:
    data = sign_note("hello\n", [OTHER, SIGNER])
    assert open_note(data, [SIGNER.verifier]).verified_by == (SIGNER.name,)
    with pytest.raises(InvalidNote):
        open_note(data, [NoteSigner("example.net/nobody", KEY).verifier])
    # same name and id as a known key but a wrong signature: the whole note is refused
    forged = b"hello\n\n" + sign_note("bye\n", [SIGNER]).split(b"\n\n")[1]
    with pytest.raises(InvalidNote):
        open_note(forged, [SIGNER.verifier])


def test_same_name_other_key_is_unknown() -> None:
    impostor = NoteSigner(SIGNER.name, Ed25519PrivateKey.from_private_bytes(bytes(32)))
    with pytest.raises(InvalidNote, match="no signature of a known key"):
        open_note(sign_note("x\n", [impostor]), [SIGNER.verifier])


def test_vkey_round_trip_and_refusals() -> None:
    v = NoteVerifier.from_vkey(SIGNER.vkey)
    assert v.vkey() == SIGNER.vkey and v.key_id == SIGNER.key_id
    name, kid, key = SIGNER.vkey.split("+", 2)
    for bad in (f"{name}+{kid}", f"{name}+{kid.upper()}+{key}", f"{name}+00000000+{key}", f"a b+{kid}+{key}",
                f"{name}+{kid}+{key[:-2]}", f"{name}+{kid}+AgAA", "", f"+{kid}+{key}"):
        with pytest.raises(MalformedNote):
            NoteVerifier.from_vkey(bad)


@pytest.mark.parametrize("text", [
    "o\n1\n" + "A" * 44 + "\n",  # not canonical / not 32 bytes
    "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "o\n1\n",
    "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
    "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "o\n١\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
])
def test_bad_checkpoints(text: str) -> None:
    with pytest.raises(MalformedNote):
        parse_checkpoint(text)


@pytest.mark.parametrize("data", [
    b"no blank line\n\xe2\x80\x94 a AAAAAAA=\n",
    b"text\n\n",
    b"text\n\n\xe2\x80\x94 a AAAAAAA=",
    b"text\n\n- a AAAAAAA=\n",
    b"text\n\n\xe2\x80\x94 a+b AAAAAAA=\n",
    b"text\n\n\xe2\x80\x94 a AAAA\n",
    b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n",
    b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n",
])
def test_bad_notes(data: bytes) -> None:
    with pytest.raises(MalformedNote):
        parse_note(data)


def test_limits() -> None:
    with pytest.raises(MalformedNote):
        parse_note(b"x" * 70_000 + b"\n\n")
    many = sign_note("x\n", [SIGNER] * 65)
    with pytest.raises(MalformedNote):
        parse_note(many)
    assert len(parse_note(sign_note("x\n", [SIGNER] * 16)).signatures) == 16
    with pytest.raises(InvalidNote):
        open_checkpoint(sign_checkpoint(Checkpoint("example.net/log", 1, bytes(32)), SIGNER), [SIGNER.verifier],
                        origin="example.net/other")
