"""Device keys, CSRs, the fleet CA and enrollment (DESIGN §6, docs/provisioning.md).

Device side: ``open_signer(uri)`` (``file:`` or ``pkcs11:``), ``resolve_device_id``, ``build_csr``.
Operator side: ``FleetCa`` (issue, revoke, CRL, registry). Aggregator side: ``load_registry``,
``RegistryEntry``, ``verify_device_chain``, ``load_crl`` (pure, no I/O besides the loaders).
"""

from provisioning.ca import CaSettings, FleetCa, IssuedCert
from provisioning.certs import fingerprint, fleet_of_ca, load_certificates
from provisioning.csr import build_csr, check_csr, claim_code, load_csr, spiffe_uri, validate_fleet_name
from provisioning.device_id import (
    DEVICE_ID_RE,
    DeviceIdSource,
    is_valid_device_id,
    resolve_device_id,
    validate_device_id,
)
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
from provisioning.key_uri import FileKeyUri, KeyUri, Pkcs11KeyUri, parse_key_uri
from provisioning.registry import Registry, RegistryEntry, load_registry, parse_registry, registry_json
from provisioning.signers import open_signer
from provisioning.verify import leaf_identity, load_crl, verify_chain, verify_device_chain

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
