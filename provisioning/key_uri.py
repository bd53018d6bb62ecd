"""Parse key URIs (``file:/path`` and RFC 7512 ``pkcs11:token=...;object=...``) without touching the key.

Pure, so config validation can check a key URI's shape without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from provisioning.errors import InvalidInput


@dataclass(frozen=True)
class FileKeyUri:
    """A PKCS#8 PEM key file."""

    path: str


@dataclass(frozen=True)
class Pkcs11KeyUri:
    """A key inside a PKCS#11 token. ``pin_source`` names a file holding the user PIN, if any."""

    token: str
    object: str
    module_path: str | None = None
    pin_value: str | None = None
    pin_source: str | None = None


KeyUri = FileKeyUri | Pkcs11KeyUri


def parse_key_uri(uri: str) -> KeyUri:
    """Parse ``uri``; raises ``InvalidInput`` saying what shape was expected."""
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise InvalidInput(f"file key URI must hold an absolute path (file:/var/lib/...), got {uri!r}")
        return FileKeyUri(unquote(path))
    if uri.startswith("pkcs11:"):
        body = uri[len("pkcs11:"):]
        path_part, _, query = body.partition("?")
        attrs: dict[str, str] = {}
        for part in filter(None, path_part.split(";")):
            name, sep, value = part.partition("=")
            if not sep:
                raise InvalidInput(f"pkcs11 URI attribute {part!r} lacks '=' in {uri!r}")
            attrs[name] = unquote(value)
        for part in filter(None, query.split("&")):
            name, sep, value = part.partition("=")
            if not sep:
                raise InvalidInput(f"pkcs11 URI query attribute {part!r} lacks '=' in {uri!r}")
            attrs[name] = unquote(value)
        if "token" not in attrs or "object" not in attrs:
            raise InvalidInput(f"pkcs11 URI needs token= and object=, got {uri!r}")
        return Pkcs11KeyUri(
            token=attrs["token"],
            object=attrs["object"],
            module_path=attrs.get("module-path"),
            pin_value=attrs.get("pin-value"),
            pin_source=attrs.get("pin-source"),
        )
    raise InvalidInput(f"key URI must start with file: or pkcs11:, got {uri!r}")
