"""Mosquitto configuration for the fleet's mTLS listener and topic ACL (DESIGN §5), rendered as text.

Pure: paths and names in, config text out. ``use_identity_as_username`` makes the certificate CN (the
device id) the MQTT username, so the ``pattern`` lines confine each device to its own record topics under
``<prefix>/<id>/`` for writes and its own ``ack`` for reads; only aggregator identities write ``ack``
(signed receipts) and ``_log``, and they read everything. Mosquitto 2.0 has no
deny rules, so anything not granted here is refused (MQTT v5 reason 135 on publish).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envelope.names import topic_prefix_problem
from provisioning.device_id import validate_device_id
from provisioning.errors import InvalidInput


@dataclass(frozen=True)
class BrokerPaths:
    """Where the broker will find each file (absolute paths on the broker host)."""

    cafile: str
    certfile: str
    keyfile: str
    crlfile: str
    acl_file: str


def validate_prefix(prefix: str) -> str:
    """A topic prefix by the one rule (``envelope.names.topic_prefix_problem``)."""
    problem = topic_prefix_problem(prefix)
    if problem:
        raise InvalidInput(problem)
    return prefix


def render_listener(paths: BrokerPaths, *, port: int, bind: str | None, fleet: str, ca_fingerprint: str,
                    lock_client_id: bool = True) -> str:
    """The listener fragment: TLS with required client certificates, CRL, identity as username, ACL."""
    if not 0 < port < 65536:
        raise InvalidInput(f"port must be 1-65535, got {port}")
    lines = [
        f"# edge-provision broker-config: mTLS listener for fleet {fleet}",
        f"# fleet root CA {ca_fingerprint}",
        f"listener {port}" + (f" {bind}" if bind else ""),
        f"cafile {paths.cafile}",
        f"certfile {paths.certfile}",
        f"keyfile {paths.keyfile}",
        f"crlfile {paths.crlfile}",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    if lock_client_id:
        lines += [
            "# the MQTT client id must equal the certificate CN, so no client can take over another's session",
            "use_username_as_clientid true",
        ]
    lines += [
        f"acl_file {paths.acl_file}",
        "allow_anonymous false",
        "set_tcp_nodelay true",
        "",
    ]
    return "\n".join(lines)


# What a device may publish under its own id (DESIGN §5). Not ``ack``: a receipt tells a device to delete
# data, so only aggregator identities may write it (DESIGN §8), and Mosquitto has no deny rules: the device
# grants are listed one by one instead of ``<prefix>/%u/#``. ``doctor`` is where ``edge-agent doctor``
# publishes its probe (QoS 1, not retained): no aggregator subscribes to it, so the probe shows whether the
# broker lets this identity write under its own id without injecting anything into the record stream.
DEVICE_WRITE_TOPICS = ("result/+", "reading/+", "telemetry", "status", "gap", "doctor")


def render_acl(prefix: str, aggregators: Sequence[str]) -> str:
    """The ACL: devices write their own record topics and read their own ack; aggregators read all and are
    the only ones that write ``<prefix>/+/ack`` (receipts) and ``<prefix>/_log/#`` (transparency log)."""
    validate_prefix(prefix)
    for a in aggregators:
        validate_device_id(a)
    lines = [
        "# edge-provision broker-config ACL (the username is the certificate CN)",
        "# devices: publish only their own record topics (never ack), subscribe only to their own ack",
        *(f"pattern write {prefix}/%u/{t}" for t in DEVICE_WRITE_TOPICS),
        f"pattern read {prefix}/%u/ack",
        f"pattern read {prefix}/_log/#",
        "",
    ]
    for a in sorted(set(aggregators)):
        lines += [
            f"# aggregator {a}",
            f"user {a}",
            f"topic read {prefix}/#",
            f"topic write {prefix}/+/ack",
            f"topic write {prefix}/_log/#",
            "",
        ]
    return "\n".join(lines)
