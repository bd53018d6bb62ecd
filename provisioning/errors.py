"""Errors of the provisioning package, split by who is at fault.

``InvalidInput`` and its children: data from outside (a CSR, a certificate, a device id, a URI, a CRL) is
malformed or does not match; ``reason`` is a short stable code that aggregators count and print in reject
tables. ``KeyStoreError``: a key cannot be created, found or used. ``CaStateError``: the operator's CA
directory is missing, incomplete or would be overwritten.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Root of every provisioning error."""


class KeyStoreError(ProvisioningError):
    """A key cannot be created, found or used (missing file, unsafe permissions, token refused)."""


class UnsafeKeyPermissions(KeyStoreError):
    """A key file is readable by others or owned by another user; the message says how to fix it."""


class CaStateError(ProvisioningError):
    """The CA or device state directory is missing, incomplete, or an action would overwrite it."""


class InvalidInput(ProvisioningError):
    """Input from outside (CSR, certificate, device id, URI) is malformed or does not match."""

    reason = "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NotFound(InvalidInput):
    """A read-only command named a CA, device-state or identity directory that does not exist. Operator
    input (exit 2), and nothing was created."""

    reason = "not_found"


class InvalidDeviceId(InvalidInput):
    """A device id does not have the documented shape, or a certificate's CN and SAN disagree."""

    reason = "bad_id"


class UntrustedCertificate(InvalidInput):
    """A certificate does not chain to the fleet CA (unknown issuer, bad signature, wrong profile)."""

    reason = "untrusted"


class RevokedCertificate(InvalidInput):
    """A certificate's serial is on the fleet CA's CRL."""

    reason = "revoked"


class ExpiredCertificate(InvalidInput):
    """A certificate is outside its validity period at the time of the check."""

    reason = "expired"


class StaleCrl(UntrustedCertificate):
    """The CRL is past its next-update time: revocation status is unknown, so nothing is trusted."""

    reason = "stale_crl"
