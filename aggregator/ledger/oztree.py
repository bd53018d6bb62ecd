"""OpenZeppelin ``StandardMerkleTree`` (``@openzeppelin/merkle-tree`` v1) in Python: the reward-contract format.

Why this exact shape: a Solidity contract checks one device's ledger entry with OpenZeppelin's
``MerkleProof.verify(proof, root, leaf)``, where ``leaf = keccak256(bytes.concat(keccak256(abi.encode(...))))``
and each inner node is ``keccak256`` of its two children sorted bytewise. The tree is the library's: leaf
hashes sorted ascending, laid out as a complete binary tree in one array (root at 0, children of ``i`` at
``2i+1`` and ``2i+2``, leaf ``k`` of the sorted order at ``len - 1 - k``). ``dump()`` writes the library's
``standard-v1`` JSON, which ``StandardMerkleTree.load`` in JavaScript reads back (tests/js checks that with the
real package). ABI encoding and keccak come from ``eth-abi`` and ``eth-hash``, never hand-written.

Pure: no I/O. Values are Python values (``int`` for uintN/intN, ``str`` for string, ``bytes`` for bytesN and
bytes, ``bool``, lists for ``T[]``); ``value_to_json``/``value_from_json`` convert to the dump's JSON form
(decimal strings for integers, ``0x`` hex for bytes), the same form the JavaScript library accepts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aggregator.ledger.errors import LedgerError

FORMAT = "standard-v1"
_INT = re.compile(r"^(u?)int(\d*)$")
_FIXED_BYTES = re.compile(r"^bytes(\d+)$")
_HEX = re.compile(r"^0x([0-9a-fA-F]{2})*$")


@functools.cache
def _eth() -> tuple[Any, Any]:
    """eth-abi's ``encode`` and eth-hash's ``keccak``, imported on first use so that ``edge-aggregator`` runs
    without the "ledger" extra for every other command."""
    try:
        from eth_abi.abi import encode  # noqa: PLC0415
        from eth_hash.auto import keccak  # noqa: PLC0415
    except ImportError as e:
        raise LedgerError("the contribution ledger needs eth-abi and eth-hash: "
                          "pip install 'depin-edge-agent[ledger]'") from e
    return encode, keccak


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (the Ethereum hash, not NIST SHA3-256)."""
    return bytes(_eth()[1](data))


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence[Any]) -> bytes:
    """``keccak256(keccak256(abi.encode(value)))``: double hashed so a leaf can never pass for an inner node."""
    try:
        encoded = _eth()[0](list(leaf_encoding), list(value))
    except Exception as e:  # eth-abi raises several types for values that do not fit their type
        raise LedgerError(f"value {list(value)!r:.200} does not ABI-encode as {list(leaf_encoding)}: {e}") from e
    return keccak256(keccak256(encoded))


def node_hash(a: bytes, b: bytes) -> bytes:
    """An inner node: keccak256 of the two children in ascending byte order (OpenZeppelin's commutative hash)."""
    return keccak256(a + b if a <= b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a proof leads to from ``leaf`` (what ``MerkleProof.processProof`` computes on chain)."""
    node = leaf
    for sibling in proof:
        if len(sibling) != 32:
            raise LedgerError(f"proof nodes must be 32 bytes, got {len(sibling)}")
        node = node_hash(node, sibling)
    return node


def verify_proof(root: bytes, leaf_encoding: Sequence[str], value: Sequence[Any], proof: Sequence[bytes]) -> None:
    """Check that ``value`` is a leaf of the tree with ``root``; raises ``LedgerError`` if not."""
    if process_proof(leaf_hash(leaf_encoding, value), proof) != root:
        raise LedgerError("the proof does not lead from this value to the root")


@dataclass(frozen=True)
class StandardMerkleTree:
    """A built tree: ``tree`` is the node array, ``tree_index[i]`` where value ``i`` sits in it."""

    leaf_encoding: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    tree: tuple[bytes, ...]
    tree_index: tuple[int, ...]

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]) -> StandardMerkleTree:
        """Build the tree over ``values`` (kept in the given order; the leaves are sorted by hash)."""
        if not values:
            raise LedgerError("a StandardMerkleTree needs at least one value")
        encoding = tuple(leaf_encoding)
        hashed = sorted(((leaf_hash(encoding, v), i) for i, v in enumerate(values)))
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        index = [0] * n
        for k, (h, i) in enumerate(hashed):
            tree[len(tree) - 1 - k] = h
            index[i] = len(tree) - 1 - k
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = node_hash(tree[2 * i + 1], tree[2 * i + 2])
        return cls(encoding, tuple(tuple(v) for v in values), tuple(tree), tuple(index))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def proof(self, value_index: int) -> list[bytes]:
        """Sibling hashes from value ``value_index``'s leaf up to the root."""
        i = self.tree_index[value_index]
        out = []
        while i > 0:
            out.append(self.tree[i - 1 if i % 2 == 0 else i + 1])
            i = (i - 1) // 2
        return out

    def dump(self) -> dict[str, Any]:
        """The ``standard-v1`` JSON object ``StandardMerkleTree.dump()`` writes in JavaScript."""
        return {
            "format": FORMAT,
            "leafEncoding": list(self.leaf_encoding),
            "tree": [_hex(h) for h in self.tree],
            "values": [{"value": value_to_json(self.leaf_encoding, v), "treeIndex": t}
                       for v, t in zip(self.values, self.tree_index, strict=True)],
        }

    @classmethod
    def load(cls, data: Any) -> StandardMerkleTree:
        """Read a ``standard-v1`` dump and check it the way the JavaScript ``load`` does: every value hashes
        to its leaf, every inner node is the hash of its children. Raises ``LedgerError``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise LedgerError(f"not a {FORMAT} StandardMerkleTree dump (format {found!r:.40})")
        encoding = data.get("leafEncoding")
        tree = data.get("tree")
        values = data.get("values")
        if not isinstance(encoding, list) or not all(isinstance(t, str) for t in encoding):
            raise LedgerError("dump leafEncoding must be a list of ABI type names")
        if not isinstance(tree, list) or not tree or not isinstance(values, list):
            raise LedgerError("dump tree must be a non-empty list and values a list")
        nodes = tuple(_unhex(h, "tree node", 32) for h in tree)
        parsed, index = [], []
        for n, entry in enumerate(values):
            if not isinstance(entry, dict) or not isinstance(entry.get("treeIndex"), int):
                raise LedgerError(f"dump values[{n}] must be an object with value and treeIndex")
            t = entry["treeIndex"]
            if not 0 <= t < len(nodes) or 2 * t + 1 < len(nodes):
                raise LedgerError(f"dump values[{n}].treeIndex {t} is not a leaf of a tree of {len(nodes)} nodes")
            value = value_from_json(encoding, entry.get("value"))
            if leaf_hash(encoding, value) != nodes[t]:
                raise LedgerError(f"dump values[{n}] does not hash to tree[{t}]")
            parsed.append(value)
            index.append(t)
        for i in range(len(nodes)):
            left, right = 2 * i + 1, 2 * i + 2
            if right < len(nodes) and nodes[i] != node_hash(nodes[left], nodes[right]):
                raise LedgerError(f"dump tree[{i}] is not the hash of its children")
            if left < len(nodes) <= right:
                raise LedgerError("dump tree is not a complete binary tree")
        return cls(tuple(encoding), tuple(parsed), nodes, tuple(index))


# ---- JSON form of ABI values -------------------------------------------------------------------------


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _unhex(text: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(text, str) or not _HEX.match(text):
        raise LedgerError(f"{what} must be 0x-prefixed hex, got {text!r:.80}")
    raw = bytes.fromhex(text[2:])
    if size is not None and len(raw) != size:
        raise LedgerError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _element_to_json(typ: str, v: Any) -> Any:
    if typ.endswith("[]"):
        return [_element_to_json(typ[:-2], x) for x in v]
    if _INT.match(typ):
        return str(int(v))
    if typ == "bool":
        return bool(v)
    if typ == "string":
        return str(v)
    if typ == "bytes" or _FIXED_BYTES.match(typ):
        return _hex(bytes(v))
    raise LedgerError(f"ABI type {typ!r} is not supported in ledger leaves")


def _element_from_json(typ: str, v: Any) -> Any:
    if typ.endswith("[]"):
        if not isinstance(v, list):
            raise LedgerError(f"a {typ} value must be a list, got {v!r:.80}")
        return [_element_from_json(typ[:-2], x) for x in v]
    if _INT.match(typ):
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not
                                                                      re.fullmatch(r"-?\d+", v)):
            raise LedgerError(f"a {typ} value must be a decimal string, got {v!r:.80}")
        return int(v)
    if typ == "bool":
        if not isinstance(v, bool):
            raise LedgerError(f"a bool value must be true or false, got {v!r:.80}")
        return v
    if typ == "string":
        if not isinstance(v, str):
            raise LedgerError(f"a string value must be text, got {v!r:.80}")
        return v
    m = _FIXED_BYTES.match(typ)
    if typ == "bytes" or m:
        return _unhex(v, f"a {typ} value", int(m.group(1)) if m else None)
    raise LedgerError(f"ABI type {typ!r} is not supported in ledger leaves")


def value_to_json(leaf_encoding: Sequence[str], value: Sequence[Any]) -> list[Any]:
    """A value in the dump's JSON form: integers as decimal strings, bytes as 0x hex."""
    if len(value) != len(leaf_encoding):
        raise LedgerError(f"value has {len(value)} fields, the leaf encoding {len(leaf_encoding)}")
    return [_element_to_json(t, v) for t, v in zip(leaf_encoding, value, strict=True)]


def value_from_json(leaf_encoding: Sequence[str], value: Any) -> tuple[Any, ...]:
    """The Python value of a dump's JSON value (inverse of ``value_to_json``)."""
    if not isinstance(value, list) or len(value) != len(leaf_encoding):
        raise LedgerError(f"value must be a list of {len(leaf_encoding)} fields, got {value!r:.80}")
    return tuple(_element_from_json(t, v) for t, v in zip(leaf_encoding, value, strict=True))
