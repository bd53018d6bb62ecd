"""The naming rules every package shares, written once: device ids and the topic prefix (DESIGN §5, §6).

A device id is the certificate CN, an MQTT topic segment and a file name; the topic prefix is what every
topic of a deployment starts with. The agent (config), the aggregator (topics, config, web), provisioning
(CSR, CA, broker ACL) and the tests all import these, so a device one accepts is never refused by another.
Pure, no imports of ours.
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_ID_RE", "DEVICE_ID_RULE", "device_id_problem", "is_valid_device_id", "topic_prefix_problem"]

# \Z, not $: "$" also matches before a trailing newline, which would let "pump-1\n" through.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}\Z")
DEVICE_ID_RULE = "3-64 characters of a-z, 0-9 and '-', starting with a letter or digit"
_PREFIX_MAX_BYTES = 256


def is_valid_device_id(value: object) -> bool:
    """True when ``value`` has the device-id shape."""
    return isinstance(value, str) and DEVICE_ID_RE.match(value) is not None


def device_id_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a device id (expected vs got), or None."""
    if is_valid_device_id(value):
        return None
    return f"device id must be {DEVICE_ID_RULE}; got {value!r:.80}"


def topic_prefix_problem(prefix: object) -> str | None:
    """What is wrong with ``prefix`` as the topic prefix (``edge/v1``), or None.

    Non-empty segments separated by '/', no leading or trailing '/', no MQTT wildcards (``+``, ``#``) or NUL,
    not starting with ``$`` (``$SYS`` and ``$share`` belong to the broker), at most 256 bytes.
    """
    if not isinstance(prefix, str) or not prefix:
        return f"topic prefix must be a non-empty string like edge/v1, got {prefix!r:.80}"
    if any(c in prefix for c in "+#\x00"):
        return f"topic prefix must not contain MQTT wildcards (+, #) or NUL, got {prefix!r:.80}"
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return f"topic prefix must be non-empty segments without a leading or trailing '/', got {prefix!r:.80}"
    if prefix.startswith("$"):
        return f"topic prefix must not start with '$' (the broker's $SYS and $share), got {prefix!r:.80}"
    if len(prefix.encode("utf-8")) > _PREFIX_MAX_BYTES:
        return f"topic prefix must be at most {_PREFIX_MAX_BYTES} bytes, got {len(prefix.encode('utf-8'))}"
    return None
