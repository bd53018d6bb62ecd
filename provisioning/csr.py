"""Certificate signing requests made on the device, by any ``Signer`` (file key or PKCS#11 token).

``cryptography``'s CSR builder needs an in-memory private key, which a token never hands out. So the
CertificationRequestInfo is assembled here in DER (a handful of TLVs), signed through ``Signer.sign`` and
parsed back with ``cryptography`` to prove it is well formed and its signature verifies: the CSR's
signature is the proof that the requester holds the key. Also holds the pure checks the CA runs on a CSR
and the short claim code a technician reads off a device.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from envelope import PublicKey, Signer, labels, spki_der
from provisioning.device_id import validate_device_id
from provisioning.errors import InvalidDeviceId, InvalidInput

FLEET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,254}$")
_OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_OID_ED25519 = "1.3.101.112"
_OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def validate_fleet_name(value: str) -> str:
    """A fleet trust-domain name: lowercase letters, digits, ``.``, ``_``, ``-``; 1–255 characters."""
    if not isinstance(value, str) or not FLEET_RE.match(value):
        raise InvalidInput(
            f"fleet name must be 1-255 characters of a-z, 0-9, '.', '_' and '-' (a SPIFFE trust domain, "
            f"e.g. acme-sensors.example), got {value!r}"
        )
    return value


def spiffe_uri(fleet: str, device_id: str, kind: str = "device") -> str:
    """``spiffe://<fleet>/<kind>/<id>``: the SAN URI of a fleet certificate."""
    return f"spiffe://{fleet}/{kind}/{device_id}"


def parse_spiffe_uri(uri: str) -> tuple[str, str, str]:
    """Split ``spiffe://<fleet>/<kind>/<id>`` into its parts; raises ``InvalidDeviceId`` on another shape."""
    m = re.fullmatch(r"spiffe://([^/]+)/(device|aggregator)/([^/]+)", uri)
    if not m:
        raise InvalidDeviceId(f"SAN URI must look like spiffe://<fleet>/device/<id>, got {uri!r}")
    return m.group(1), m.group(2), m.group(3)


def claim_code(public_key: PublicKey) -> str:
    """A short code (``XXXX-XXXX``, Crockford base32 of SHA-256 over the SPKI) that binds a CSR to a device.

    The technician reads it on the device (`device init`), the operator sees it for the same CSR (`ca sign`,
    `fleet sign` report): a match shows the CSR came from that device.
    """
    digest = hashlib.sha256(spki_der(public_key)).digest()[:5]
    code = base64.b32encode(digest).decode().translate(_CROCKFORD)
    return f"{code[:4]}-{code[4:]}"


# --- minimal DER -------------------------------------------------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _extension(ext: x509.ExtensionType, critical: bool = False) -> bytes:
    body = _oid(ext.oid.dotted_string)
    if critical:
        body += b"\x01\x01\xff"
    return _seq(body, _tlv(0x04, ext.public_bytes()))


def build_csr(signer: Signer, device_id: str, fleet: str, *, role: str = "device") -> x509.CertificateSigningRequest:
    """A CSR for ``device_id`` in ``fleet`` signed by ``signer``: CN = id, SAN URI = SPIFFE id."""
    validate_device_id(device_id)
    validate_fleet_name(fleet)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]).public_bytes()
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri(fleet, device_id, role))])
    ext_req = _seq(_oid(_OID_EXTENSION_REQUEST), _tlv(0x31, _seq(_extension(san))))
    info = _seq(b"\x02\x01\x00", name, spki_der(signer.public_key()), _tlv(0xA0, ext_req))
    raw = signer.sign(info)
    if signer.alg == labels.ALG_ED25519:
        alg_id, sig = _seq(_oid(_OID_ED25519)), raw
    else:
        if len(raw) != 64:
            raise InvalidInput(f"signer returned a {len(raw)}-byte ECDSA signature; expected 64 (r||s)")
        alg_id = _seq(_oid(_OID_ECDSA_SHA256))
        sig = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    der = _seq(info, alg_id, _tlv(0x03, b"\x00" + sig))
    csr = x509.load_der_x509_csr(der)
    if not csr.is_signature_valid:
        raise InvalidInput("the key's signature over the CSR does not verify: the signer is broken")
    return csr


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """PEM bytes of a CSR."""
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes, *, source: str = "CSR") -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR; ``InvalidInput`` naming ``source`` when it is neither."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as e:
        raise InvalidInput(f"{source} is not a PEM or DER certificate signing request ({e})", reason="bad_csr") from e


def check_csr(
    csr: x509.CertificateSigningRequest, fleet: str, *, source: str = "CSR", role: str = "device"
) -> tuple[str, PublicKey]:
    """The CA's checks: signature (proof of possession), id shape, SAN agreeing with CN and fleet, key type.

    Returns ``(device_id, public_key)``; raises an ``InvalidInput`` that says what was expected.
    """
    try:
        sig_ok = csr.is_signature_valid
    except Exception as e:  # unsupported algorithm in the CSR
        raise InvalidInput(f"{source}: cannot check the CSR signature ({e})", reason="bad_csr") from e
    if not sig_ok:
        raise InvalidInput(
            f"{source}: the CSR signature does not verify with the CSR's own public key "
            "(corrupted or tampered request; make a new one with `edge-provision device init`)",
            reason="bad_signature",
        )
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise InvalidDeviceId(f"{source}: subject must hold exactly one CN (the device id), found {len(cns)}")
    cn = cns[0].value
    device_id = cn if isinstance(cn, str) else cn.decode(errors="replace")
    try:
        validate_device_id(device_id)
    except InvalidDeviceId as e:
        raise InvalidDeviceId(f"{source}: {e}") from e
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            f, kind, sid = parse_spiffe_uri(uri)
            if f != fleet:
                raise InvalidInput(
                    f"{source}: CSR is for fleet {f!r} but this CA serves fleet {fleet!r} (wrong CA?)",
                    reason="wrong_fleet",
                )
            if kind != role:
                raise InvalidInput(f"{source}: CSR asks for a {kind} identity, expected a {role}", reason="bad_role")
            if sid != device_id:
                raise InvalidDeviceId(f"{source}: SAN names {sid!r} but CN names {device_id!r}")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise InvalidInput(f"{source}: EC key must be P-256, got {key.curve.name}", reason="bad_key")
        return device_id, key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return device_id, key
    raise InvalidInput(f"{source}: key must be P-256 or Ed25519, got {type(key).__name__}", reason="bad_key")
