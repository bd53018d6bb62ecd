"""PKCS#11 key store: a P-256 key generated inside a token (secure element, TPM via tpm2-pkcs11, HSM,
SoftHSM2 in tests) that never leaves it.

Keys are made with EXTRACTABLE false and SENSITIVE true, so the token refuses to export them. Many tokens
(SoftHSM2 among them) lack ``CKM_ECDSA_SHA256``: we hash with SHA-256 here and ask for ``CKM_ECDSA`` over the
digest, which returns raw r||s (64 bytes), already COSE's form. The module is found from the URI's
``module-path``, else ``EDGE_PKCS11_MODULE``, else SoftHSM2's default path; the user PIN from ``pin-value``,
``pin-source`` (a file), or ``EDGE_PKCS11_PIN``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from envelope import PublicKey, kid_for, labels
from provisioning.errors import KeyStoreError
from provisioning.key_uri import Pkcs11KeyUri

try:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
except ImportError:  # pragma: no cover - optional dependency
    pkcs11 = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()
_open_sessions = 0


def _require_pkcs11() -> None:
    if pkcs11 is None:
        raise KeyStoreError("pkcs11: keys need the python-pkcs11 package (pip install 'depin-edge-agent[pkcs11]')")


def module_path_for(uri: Pkcs11KeyUri) -> str:
    """The PKCS#11 module to load for ``uri``."""
    if uri.module_path:
        return uri.module_path
    env = os.environ.get("EDGE_PKCS11_MODULE")
    if env:
        return env
    for cand in DEFAULT_MODULES:
        if Path(cand).exists():
            return cand
    raise KeyStoreError(
        "no PKCS#11 module: add module-path=/path/to/module.so to the pkcs11: URI or set EDGE_PKCS11_MODULE"
    )


def pin_for(uri: Pkcs11KeyUri) -> str | None:
    """The user PIN from the URI, a pin-source file, or ``EDGE_PKCS11_PIN``; ``None`` if none given."""
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source:
        src = uri.pin_source.removeprefix("file:")
        try:
            return Path(src).read_text().strip()
        except OSError as e:
            raise KeyStoreError(f"PIN file {src} cannot be read: {e.strerror}") from e
    return os.environ.get("EDGE_PKCS11_PIN")


def _lib(path: str) -> Any:
    _require_pkcs11()
    with _libs_lock:
        if path not in _libs:
            try:
                _libs[path] = pkcs11.lib(path)
            except (RuntimeError, OSError) as e:
                raise KeyStoreError(f"cannot load PKCS#11 module {path}: {e}") from e
        return _libs[path]


def _token(uri: Pkcs11KeyUri) -> Any:
    lib = _lib(module_path_for(uri))
    try:
        return lib.get_token(token_label=uri.token)
    except pkcs11.NoSuchToken:
        # A token initialised after the module was loaded is invisible until C_Initialize runs again, which
        # is only safe while no session of ours is open.
        if _open_sessions == 0:
            lib.reinitialize()
            try:
                return lib.get_token(token_label=uri.token)
            except pkcs11.NoSuchToken:
                pass
        labels_seen = [t.label for t in lib.get_tokens()]
        raise KeyStoreError(f"no PKCS#11 token labelled {uri.token!r} (tokens present: {labels_seen})") from None
    except pkcs11.MultipleTokensReturned:
        raise KeyStoreError(f"several PKCS#11 tokens are labelled {uri.token!r}; labels must be unique") from None


def _open_session(uri: Pkcs11KeyUri, *, rw: bool = False) -> Any:
    global _open_sessions  # noqa: PLW0603 - process-wide count guarding reinitialize()
    token = _token(uri)
    try:
        session = token.open(rw=rw, user_pin=pin_for(uri))
    except pkcs11.PinIncorrect:
        raise KeyStoreError(f"PKCS#11 token {uri.token!r} refused the PIN") from None
    except pkcs11.PKCS11Error as e:
        raise KeyStoreError(f"cannot open PKCS#11 token {uri.token!r}: {type(e).__name__} {e}") from e
    _open_sessions += 1
    return session


def _close_session(session: Any) -> None:
    global _open_sessions  # noqa: PLW0603
    try:
        session.close()
    finally:
        _open_sessions -= 1


def _keys(session: Any, label: str) -> tuple[list[Any], list[Any]]:
    privs = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
    pubs = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}))
    return privs, pubs


class Pkcs11Signer:
    """A ``Signer`` over a token-resident P-256 key; holds one session until ``close()``."""

    def __init__(self, uri: Pkcs11KeyUri, session: Any, private: Any, public: PublicKey) -> None:
        self.uri = uri
        self._session = session
        self._private = private
        self._public = public
        self._kid = kid_for(public)
        self._lock = threading.Lock()

    @property
    def alg(self) -> int:
        return labels.ALG_ESP256

    @property
    def kid(self) -> bytes:
        return self._kid

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if self._session is None:
                raise KeyStoreError("PKCS#11 signer is closed")
            try:
                sig: bytes = self._private.sign(digest, mechanism=Mechanism.ECDSA)
            except pkcs11.PKCS11Error as e:
                raise KeyStoreError(f"PKCS#11 token {self.uri.token!r} refused to sign: {type(e).__name__}") from e
        if len(sig) != 64:
            raise KeyStoreError(f"PKCS#11 token returned a {len(sig)}-byte signature; expected 64 (r||s)")
        return sig

    def key_attributes(self) -> dict[str, bool]:
        """EXTRACTABLE / SENSITIVE / NEVER_EXTRACTABLE / ALWAYS_SENSITIVE as the token reports them."""
        with self._lock:
            return {
                "extractable": bool(self._private[Attribute.EXTRACTABLE]),
                "sensitive": bool(self._private[Attribute.SENSITIVE]),
                "never_extractable": bool(self._private[Attribute.NEVER_EXTRACTABLE]),
                "always_sensitive": bool(self._private[Attribute.ALWAYS_SENSITIVE]),
            }

    def export_private_value(self) -> bytes:
        """Ask the token for the private value (it must refuse); used by tests and `device status`."""
        with self._lock:
            try:
                value: bytes = self._private[Attribute.VALUE]
            except pkcs11.PKCS11Error as e:
                raise KeyStoreError(f"token refused to export the key: {type(e).__name__}") from e
            return value

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                _close_session(self._session)
                self._session = None

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Signer(token={self.uri.token!r}, object={self.uri.object!r}, kid={self._kid.hex()})"


def _public_from(pub_obj: Any) -> PublicKey:
    der = encode_ec_public_key(pub_obj)
    key = serialization.load_der_public_key(der)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyStoreError("PKCS#11 key is not a P-256 EC key")
    return key


def open_pkcs11_signer(parsed: Pkcs11KeyUri) -> Pkcs11Signer:
    """Open the key named by ``parsed`` for signing; raises ``KeyStoreError`` saying what is missing."""
    session = _open_session(parsed)
    try:
        privs, pubs = _keys(session, parsed.object)
        if len(privs) != 1 or len(pubs) != 1:
            raise KeyStoreError(
                f"PKCS#11 token {parsed.token!r} holds {len(privs)} private and {len(pubs)} public keys labelled "
                f"{parsed.object!r}; expected exactly one of each (create it with `edge-provision device init`)"
            )
        if privs[0][Attribute.KEY_TYPE] != KeyType.EC:
            raise KeyStoreError(f"PKCS#11 object {parsed.object!r} is not an EC key")
        return Pkcs11Signer(parsed, session, privs[0], _public_from(pubs[0]))
    except BaseException:
        _close_session(session)
        raise


def generate_pkcs11_key(parsed: Pkcs11KeyUri) -> Pkcs11Signer:
    """Generate a P-256 key pair inside the token (not extractable, sensitive); refuses an existing label."""
    session = _open_session(parsed, rw=True)
    try:
        privs, pubs = _keys(session, parsed.object)
        if privs or pubs:
            raise KeyStoreError(
                f"PKCS#11 token {parsed.token!r} already holds a key labelled {parsed.object!r}; "
                "refusing to overwrite a device key (use `device rotate`)"
            )
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        pub, priv = params.generate_keypair(
            store=True,
            label=parsed.object,
            mechanism=Mechanism.EC_KEY_PAIR_GEN,
            public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
            private_template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            },
        )
        public = _public_from(pub)
        kid = kid_for(public)
        pub[Attribute.ID] = kid
        priv[Attribute.ID] = kid
        log.info("generated P-256 key %s in PKCS#11 token %s (kid %s)", parsed.object, parsed.token, kid.hex())
        return Pkcs11Signer(parsed, session, priv, public)
    except pkcs11.PKCS11Error as e:
        _close_session(session)
        raise KeyStoreError(f"PKCS#11 token {parsed.token!r} could not generate a key: {type(e).__name__} {e}") from e
    except BaseException:
        _close_session(session)
        raise


def pkcs11_key_exists(parsed: Pkcs11KeyUri) -> bool:
    """True when the token holds a private key labelled ``parsed.object``."""
    session = _open_session(parsed)
    try:
        privs, _ = _keys(session, parsed.object)
        return bool(privs)
    finally:
        _close_session(session)


def promote_pkcs11_key(current: Pkcs11KeyUri, successor: Pkcs11KeyUri) -> None:
    """Rotation: destroy the key labelled ``current.object`` and relabel ``successor.object`` to it."""
    session = _open_session(current, rw=True)
    try:
        new_privs, new_pubs = _keys(session, successor.object)
        if len(new_privs) != 1 or len(new_pubs) != 1:
            raise KeyStoreError(f"no single pending key labelled {successor.object!r} in token {current.token!r}")
        old_privs, old_pubs = _keys(session, current.object)
        for obj in old_privs + old_pubs:
            obj.destroy()
        for obj in new_privs + new_pubs:
            obj[Attribute.LABEL] = current.object
        log.info("PKCS#11 key %s replaced by the rotated key", current.object)
    except pkcs11.PKCS11Error as e:
        raise KeyStoreError(f"PKCS#11 token {current.token!r} refused the key rotation: {type(e).__name__}") from e
    finally:
        _close_session(session)

