"""Topic layout of DESIGN §5: parse a received topic into (device, kind, stream) and build the filters.

Pure string work, so the verifier can check a record's protected header against the topic it came on, and
the subscriber and tests agree on the filters (shared-subscription form included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aggregator.errors import Rejected
from envelope.names import DEVICE_ID_RE

STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STREAM_KINDS = ("result", "reading")
SINGLE_KINDS = ("telemetry", "status", "gap")
OFFLINE_PAYLOAD = b"offline"


@dataclass(frozen=True)
class TopicInfo:
    """What a record's topic says about it: the device, the record kind and the stream id it must carry."""

    device_id: str
    kind: str
    stream: str


def parse_topic(topic: str, prefix: str) -> TopicInfo:
    """Split ``<prefix>/<device>/<kind>[/<stream>]``; raises ``Rejected('bad_topic')`` on anything else."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise Rejected("bad_topic", f"topic {topic[:120]!r} is outside the prefix {prefix!r}")
    parts = topic[len(head):].split("/")
    device = parts[0]
    if not DEVICE_ID_RE.match(device):
        raise Rejected("bad_topic", f"topic device segment {device[:80]!r} is not a valid device id")
    if len(parts) == 3 and parts[1] in STREAM_KINDS:
        stream = parts[2]
        if not STREAM_RE.match(stream):
            raise Rejected("bad_topic", f"topic stream segment {stream[:80]!r} is not a valid stream id",
                           device_id=device)
        return TopicInfo(device, parts[1], stream)
    if len(parts) == 2 and parts[1] in SINGLE_KINDS:
        return TopicInfo(device, parts[1], parts[1])
    raise Rejected("bad_topic", f"topic {topic[:120]!r} is not <prefix>/<device>/result|reading/<stream>, "
                   "telemetry, status or gap", device_id=device)


def ack_topic(prefix: str, device_id: str) -> str:
    """Where the durable acknowledgement for ``device_id`` is published (retained)."""
    return f"{prefix}/{device_id}/ack"


def subscriptions(prefix: str, shared_group: str | None) -> list[str]:
    """Topic filters one aggregator subscribes to.

    Record topics go through the shared group when one is set, so each record reaches one worker. ``status``
    is always subscribed directly: every worker must see every birth record (to learn device keys) and
    every will, and the retained birth is what a restarted worker learns keys from.
    """
    share = f"$share/{shared_group}/" if shared_group else ""
    return [
        f"{prefix}/+/status",
        f"{share}{prefix}/+/result/+",
        f"{share}{prefix}/+/reading/+",
        f"{share}{prefix}/+/telemetry",
        f"{share}{prefix}/+/gap",
    ]
