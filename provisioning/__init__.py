"""Device keys, CSRs, the fleet CA and enrollment (DESIGN §6, docs/provisioning.md).

Device side: ``open_signer(uri)`` (``file:`` or ``pkcs11:``), ``resolve_device_id``, ``build_csr``.
Operator side: ``FleetCa`` (issue, revoke, CRL, registry). Aggregator side: ``load_registry``,
``RegistryEntry``, ``verify_device_chain``, ``load_crl`` (pure, no I/O besides the loaders).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envelope.names import DEVICE_ID_RE, is_valid_device_id
    from provisioning.ca import CaSettings, FleetCa, IssuedCert
    from provisioning.certs import fingerprint, fleet_of_ca, load_certificates
    from provisioning.csr import build_csr, check_csr, claim_code, load_csr, spiffe_uri, validate_fleet_name
    from provisioning.device_id import DeviceIdSource, resolve_device_id, validate_device_id
    from provisioning.errors import (
        CaStateError,
        ExpiredCertificate,
        InvalidDeviceId,
        InvalidInput,
        KeyStoreError,
        ProvisioningError,
        RevokedCertificate,
        StaleCrl,
        UnsafeKeyPermissions,
        UntrustedCertificate,
    )
    from provisioning.file_key import (
        SoftwareSigner,
        check_key_file_permissions,
        create_file_key,
        generate_private_key,
        load_file_signer,
        write_private_key,
    )
    from provisioning.fsutil import atomic_write
    from provisioning.key_uri import FileKeyUri, KeyUri, Pkcs11KeyUri, parse_key_uri
    from provisioning.registry import Registry, RegistryEntry, load_registry, parse_registry, registry_json
    from provisioning.signers import open_signer
    from provisioning.verify import leaf_identity, load_crl, verify_chain, verify_device_chain

# name -> defining module: submodules load on first attribute access (PEP 562), so a process that needs
# one leaf module does not pay for the rest of the package.
_LAZY: dict[str, str] = {
    "atomic_write": "provisioning.fsutil",
    "CaSettings": "provisioning.ca",
    "CaStateError": "provisioning.errors",
    "DEVICE_ID_RE": "envelope.names",
    "DeviceIdSource": "provisioning.device_id",
    "ExpiredCertificate": "provisioning.errors",
    "FileKeyUri": "provisioning.key_uri",
    "FleetCa": "provisioning.ca",
    "InvalidDeviceId": "provisioning.errors",
    "InvalidInput": "provisioning.errors",
    "IssuedCert": "provisioning.ca",
    "KeyStoreError": "provisioning.errors",
    "KeyUri": "provisioning.key_uri",
    "Pkcs11KeyUri": "provisioning.key_uri",
    "ProvisioningError": "provisioning.errors",
    "Registry": "provisioning.registry",
    "RegistryEntry": "provisioning.registry",
    "RevokedCertificate": "provisioning.errors",
    "SoftwareSigner": "provisioning.file_key",
    "StaleCrl": "provisioning.errors",
    "UnsafeKeyPermissions": "provisioning.errors",
    "UntrustedCertificate": "provisioning.errors",
    "build_csr": "provisioning.csr",
    "check_csr": "provisioning.csr",
    "check_key_file_permissions": "provisioning.file_key",
    "claim_code": "provisioning.csr",
    "create_file_key": "provisioning.file_key",
    "fingerprint": "provisioning.certs",
    "fleet_of_ca": "provisioning.certs",
    "generate_private_key": "provisioning.file_key",
    "is_valid_device_id": "envelope.names",
    "leaf_identity": "provisioning.verify",
    "load_certificates": "provisioning.certs",
    "load_crl": "provisioning.verify",
    "load_csr": "provisioning.csr",
    "load_file_signer": "provisioning.file_key",
    "load_registry": "provisioning.registry",
    "open_signer": "provisioning.signers",
    "parse_key_uri": "provisioning.key_uri",
    "parse_registry": "provisioning.registry",
    "registry_json": "provisioning.registry",
    "resolve_device_id": "provisioning.device_id",
    "spiffe_uri": "provisioning.csr",
    "validate_device_id": "provisioning.device_id",
    "validate_fleet_name": "provisioning.csr",
    "verify_chain": "provisioning.verify",
    "verify_device_chain": "provisioning.verify",
    "write_private_key": "provisioning.file_key",
}

__all__ = [
    "DEVICE_ID_RE",
    "CaSettings",
    "CaStateError",
    "DeviceIdSource",
    "ExpiredCertificate",
    "FileKeyUri",
    "FleetCa",
    "InvalidDeviceId",
    "InvalidInput",
    "IssuedCert",
    "KeyStoreError",
    "KeyUri",
    "Pkcs11KeyUri",
    "ProvisioningError",
    "Registry",
    "RegistryEntry",
    "RevokedCertificate",
    "SoftwareSigner",
    "StaleCrl",
    "UnsafeKeyPermissions",
    "UntrustedCertificate",
    "atomic_write",
    "build_csr",
    "check_csr",
    "check_key_file_permissions",
    "claim_code",
    "create_file_key",
    "fingerprint",
    "fleet_of_ca",
    "generate_private_key",
    "is_valid_device_id",
    "leaf_identity",
    "load_certificates",
    "load_crl",
    "load_csr",
    "load_file_signer",
    "load_registry",
    "open_signer",
    "parse_key_uri",
    "parse_registry",
    "registry_json",
    "resolve_device_id",
    "spiffe_uri",
    "validate_device_id",
    "validate_fleet_name",
    "verify_chain",
    "verify_device_chain",
    "write_private_key",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use and cache the attribute (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names too, loaded or not."""
    return sorted(set(globals()) | set(__all__))
