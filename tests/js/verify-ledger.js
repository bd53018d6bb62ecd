// Checks a contribution ledger with the real @openzeppelin/merkle-tree package (what a reward contract's
// off-chain tooling uses): loads the StandardMerkleTree dump (StandardMerkleTree.load validates every node),
// checks that its root is the ledger's, and verifies each device's entry and proof from the ledger JSON
// against that root with StandardMerkleTree.verify, and rebuilds the tree with StandardMerkleTree.of. Prints one JSON line; exit 0 when everything verifies.
//
//   node verify-ledger.js <ledger.oz.json> <ledger.json>
"use strict";
const fs = require("fs");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

function main(argv) {
  if (argv.length !== 2) {
    console.error("usage: node verify-ledger.js <ledger.oz.json> <ledger.json>");
    return 2;
  }
  const out = { root: null, verified: [], failed: [], errors: [] };
  let tree;
  try {
    tree = StandardMerkleTree.load(JSON.parse(fs.readFileSync(argv[0], "utf8")));
    out.root = tree.root;
  } catch (e) {
    out.errors.push(`dump: ${e.message}`);
    console.log(JSON.stringify(out));
    return 1;
  }
  const ledger = JSON.parse(fs.readFileSync(argv[1], "utf8"));
  if (ledger.root !== tree.root) {
    out.errors.push(`ledger root ${ledger.root} is not the dump's root ${tree.root}`);
  }
  const encoding = ledger.leaf_encoding;
  for (const entry of ledger.entries) {
    let ok = false;
    try {
      ok = StandardMerkleTree.verify(tree.root, encoding, entry.value, entry.proof);
    } catch (e) {
      out.errors.push(`${entry.device_id}: ${e.message}`);
    }
    (ok ? out.verified : out.failed).push(entry.device_id);
  }
  // the library's own construction over the ledger's values gives the same root (independent of our tree)
  if (ledger.entries.length > 0) {
    const rebuilt = StandardMerkleTree.of(ledger.entries.map(e => e.value), encoding);
    if (rebuilt.root !== tree.root) {
      out.errors.push(`StandardMerkleTree.of over the ledger values gives root ${rebuilt.root}, not ${tree.root}`);
    }
  }
  // every value of the dump has a proof that verifies too (getProof runs the library's own check)
  for (const [i, value] of tree.entries()) {
    if (!StandardMerkleTree.verify(tree.root, encoding, value, tree.getProof(i))) {
      out.errors.push(`dump value ${i} does not verify`);
    }
  }
  console.log(JSON.stringify(out));
  return out.failed.length === 0 && out.errors.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
