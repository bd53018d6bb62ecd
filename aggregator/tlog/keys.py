"""The log's signing key: an Ed25519 PKCS#8 file (``edge-provision log init``) under the origin's name.

The key name of a checkpoint signature is the checkpoint's origin (tlog-checkpoint: "SHOULD match"), so
the verifier key string ``<origin>+<key id>+<key>`` that devices and auditors are given follows from the
key and ``[log] origin``. The file must be 0600 and owned by the service user, as every key file here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.errors import LogError
from envelope import MalformedNote, NoteSigner
from provisioning import ProvisioningError, load_file_signer


def load_log_signer(key_file: str, origin: str) -> NoteSigner:
    """The note signer of ``key_file`` named ``origin``; ``LogError`` naming the file when unusable."""
    try:
        key = load_file_signer(key_file).private_key
    except ProvisioningError as e:
        raise LogError(f"log.key_file: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise LogError(f"log.key_file: {key_file} holds a {type(key).__name__}; the log signs with Ed25519 "
                       "(make one with `edge-provision log init`)")
    try:
        return NoteSigner(origin, key)
    except MalformedNote as e:
        raise LogError(f"log.origin: {e}") from e
