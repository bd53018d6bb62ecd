"""Seeded generators of broken inputs for the "no bytes may escape" tests (issue 12, items 11-14).

Three levels, so that mutants reach past each parser into the next one:

* ``mutate_bytes``: byte-level edits (bit flips, interesting values, deletions, insertions, duplications,
  truncation): mostly stopped by the CBOR or DER parser.
* ``mutate_der``: edits of one TLV of a DER tree (new content, another tag, a dropped or repeated element,
  an interesting INTEGER), with every enclosing length fixed, so the certificate still parses as ASN.1 and the
  X.509 layer (version, serial, extensions, SAN, key) sees the damage.
* ``random_cbor``: well-formed CBOR values of every type, for header values and payloads.

Everything takes a ``random.Random`` so a seed reproduces a failing input exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import cbor2

INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0xFF, 0x1F, 0x20, 0x3F, 0x40, 0x9F, 0xBF, 0xD2, 0xF7, 0xFF)


def mutate_bytes(data: bytes, rng: random.Random, max_ops: int = 4) -> bytes:
    """``data`` with 1..``max_ops`` random byte-level edits (never returns ``data`` itself unchanged by design,
    though two edits may cancel out)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(8)
        i = rng.randrange(len(out) + 1) if out else 0
        if op == 0 and out:  # flip a bit
            j = min(i, len(out) - 1)
            out[j] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte
            out[min(i, len(out) - 1)] = rng.choice(INTERESTING)
        elif op == 2:  # delete a span
            del out[i:i + rng.randint(1, 16)]
        elif op == 3:  # insert random bytes
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4 and out:  # duplicate a span
            j = rng.randrange(len(out))
            out[i:i] = out[j:j + rng.randint(1, 32)]
        elif op == 5:  # truncate
            del out[i:]
        elif op == 6:  # append garbage
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif out:  # a random byte
            out[min(i, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


# ---- DER --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tlv:
    """One DER element of a parsed tree: where it starts, its header size, where it ends, its ancestors."""

    start: int
    header: int
    end: int
    tag: int
    ancestors: tuple[int, ...]  # indexes of enclosing elements, innermost first


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


_trees: dict[bytes, list[Tlv]] = {}


def der_tree(data: bytes) -> list[Tlv]:
    """Every element of ``data`` (one DER element), outermost first; cached (the same certificates repeat).

    Raises ``ValueError`` for what is not DER with single-byte tags and definite lengths.
    """
    tree = _trees.get(data)
    if tree is None:
        tree = []
        _parse(data, 0, len(data), (), tree)
        if len(_trees) > 64:
            _trees.clear()
        _trees[data] = tree
    return tree


def _parse(data: bytes, pos: int, stop: int, ancestors: tuple[int, ...], out: list[Tlv]) -> None:
    while pos < stop:
        tag = data[pos]
        if tag & 0x1F == 0x1F or pos + 2 > stop:
            raise ValueError("not DER with single-byte tags")
        first = data[pos + 1]
        head = 2
        length = first
        if first >= 0x80:
            n = first & 0x7F
            length = int.from_bytes(data[pos + 2:pos + 2 + n], "big")
            head += n
        end = pos + head + length
        if end > stop:
            raise ValueError("truncated DER")
        out.append(Tlv(pos, head, end, tag, ancestors))
        if tag & 0x20:
            _parse(data, pos + head, end, (len(out) - 1, *ancestors), out)
        pos = end


def _der_integer(value: int) -> bytes:
    n = max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(n, "big", signed=True)


def _splice(data: bytes, tree: list[Tlv], node: Tlv, start: int, end: int, new: bytes) -> bytes:
    """Replace ``data[start:end]`` (inside or at ``node``'s place) by ``new``; fix every enclosing length."""
    out = data[:start] + new + data[end:]
    delta = len(new) - (end - start)
    for idx in node.ancestors:  # innermost first: an outer header sits before an inner one
        a = tree[idx]
        body = a.end - a.start - a.header + delta
        header = bytes([a.tag]) + der_length(body)
        out = out[:a.start] + header + out[a.start + a.header:]
        delta += len(header) - a.header
    return out


def mutate_der(data: bytes, rng: random.Random) -> bytes:
    """``data`` (one DER element) with one element changed and every enclosing length made right again."""
    try:
        tree = der_tree(data)
    except ValueError:
        return mutate_bytes(data, rng)
    node = rng.choice(tree)
    content = data[node.start + node.header:node.end]
    whole = data[node.start:node.end]
    op = rng.randrange(9)
    if op == 0:  # new content of a random length
        size = rng.choice((0, 1, 2, 3, 8, 33, 130))
        new = bytes([node.tag]) + der_length(size) + bytes(rng.randrange(256) for _ in range(size))
    elif op == 1:  # another tag
        tag = rng.choice((0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x17, 0x18, 0x30, 0x31, 0xA0, 0xA3,
                          0x80, 0x81, 0x82, rng.randrange(256) & 0xDF))
        new = bytes([tag]) + whole[1:]
    elif op == 2 and node.ancestors:  # drop the element
        new = b""
    elif op == 3 and node.ancestors:  # repeat it
        new = whole + whole
    elif op == 4:  # an interesting INTEGER (versions, serials, lengths)
        raw = _der_integer(rng.choice((-1, 0, 1, 2, 3, 4, 255, 2**64, -(2**64), 2**159, 2**200)))
        new = b"\x02" + der_length(len(raw)) + raw
    elif op == 5 and content:  # edit the content bytes
        raw = mutate_bytes(content, rng, max_ops=2)
        new = bytes([node.tag]) + der_length(len(raw)) + raw
    elif op == 6:  # swap with the next sibling
        sib = next((t for t in tree if t.start == node.end and t.ancestors == node.ancestors), None)
        if sib is None:
            return _splice(data, tree, node, node.start, node.end, b"\x05\x00")
        tail = data[sib.start:sib.end]
        return _splice(data, tree, node, node.start, sib.end, tail + whole)
    elif op == 7:  # empty element
        new = bytes([node.tag, 0])
    else:  # an element spliced from elsewhere in the certificate
        other = rng.choice(tree)
        new = data[other.start:other.end]
    return _splice(data, tree, node, node.start, node.end, new)


# ---- CBOR values ------------------------------------------------------------------------------------------


def random_cbor(rng: random.Random, depth: int = 0) -> Any:
    """A random decoded CBOR value: scalars of every type, containers, tags, simple values."""
    choice = rng.randrange(16 if depth < 3 else 11)
    if choice == 0:
        return rng.choice((0, 1, -1, 23, 24, 255, 256, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**64),
                           -(2**64) - 1, 2**70))
    if choice == 1:
        return rng.randint(-(2**70), 2**70)
    if choice == 2:
        return rng.choice((0.0, -0.0, 1.5, float("nan"), float("inf"), -float("inf"), 1e308, 5e-324))
    if choice == 3:
        return bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 16, 32, 33, 64))))
    if choice == 4:
        return "".join(rng.choice("ab\u00e9\u20ac\U0001f600/+#\x00") for _ in range(rng.choice((0, 1, 5, 70))))
    if choice == 5:
        return rng.choice((True, False, None))
    if choice == 6:
        return cbor2.undefined
    if choice == 7:
        return cbor2.CBORSimpleValue(rng.choice((0, 19, 32, 255)))
    if choice == 8:
        return rng.choice(("application/vnd.depin-edge.result+cbor", "application/vnd.depin-edge.status+cbor",
                           "status", "vib", "dev-a"))
    if choice == 9:
        return rng.choice((-9, -7, -19, -8, -16, 0, 1, 2, 18))
    if choice == 10:
        return b""
    if choice == 11:
        return [random_cbor(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 12:
        return {random_key(rng): random_cbor(rng, depth + 1) for _ in range(rng.randrange(4))}
    if choice == 13:
        tag = rng.choice((0, 1, 2, 3, 4, 5, 18, 21, 24, 28, 29, 30, 32, 256, 258, 55799, 2**32))
        return cbor2.CBORTag(tag, random_cbor(rng, depth + 1))
    if choice == 14:
        return [-16, bytes(rng.randrange(256) for _ in range(32))]
    return [rng.randint(-(2**40), 2**45), rng.choice((0, 1, 2, 3, -1, True))]


def random_key(rng: random.Random) -> Any:
    """A map key of the kinds that matter: small ints, the profile's labels, text, bytes."""
    return rng.choice((1, 2, 3, 4, 15, 33, -65537, -65538, -65539, -65540, -65541, -65542, -65543, 0, "a", "",
                       b"k", rng.randint(-100, 100)))
