"""Two narrow shims around paho-mqtt that cut its per-message cost on the agent's hot path (B2).

paho-mqtt 2.x does, per QoS 1 record: one ``send()`` per PUBLISH, three ``recv()`` calls per PUBACK
(command byte, length byte, body), and builds a ``Properties`` object (a 27-entry name table) plus two
``ReasonCode`` objects to decode a 4-byte PUBACK. Measured on the 2-core bench machine: ≈ 36 µs of CPU per
record in the link, and every syscall is a GIL release and re-acquire competing with the pipeline and
committer threads. See docs/benchmarks.md for before/after figures.

* ``BufferedSocket`` wraps the connected socket: ``recv`` reads ahead up to 64 KiB at a time and serves
  paho's small reads from memory; ``send`` only appends to an output buffer, and ``flush`` writes it with
  as few ``send`` calls as the kernel allows. The link thread flushes once per loop turn, and must treat
  ``buffered_in`` as "readable" (select cannot see bytes already read into the buffer).
* ``LeanClient`` decodes a plain PUBACK (success, no properties) itself and hands paho's own ``_do_on_publish`` a
  shared "Success" reason code and an empty property set; anything else (PUBCOMP, a PUBACK carrying
  properties, a malformed packet) goes through paho's code unchanged.
* ``LeanClient.publish_record`` writes a QoS 1 PUBLISH straight into the ``BufferedSocket`` and remembers only
  its message id; its PUBACK reaches ``on_publish`` like any other. paho's ``publish`` builds an
  ``MQTTMessage``, an ``MQTTMessageInfo`` with its own ``Condition``, queues an out-packet and runs
  ``loop_write`` once per message (external-loop mode): ≈ 14 µs of GIL time per record here, the fast path
  ≈ 2 µs. It falls back to ``publish`` whenever paho has packets of its own waiting (so the order of
  everything the link publishes is kept) or the socket is not ours.

This is the one module that touches paho internals (``_sock``, ``_in_packet``, ``_out_messages``,
``_do_on_publish``, ``_handle_pubackcomp``; listed in ``PAHO_INTERNALS`` and checked by a contract test);
``agent.publisher`` drives paho through its public API only. ``LeanClient`` falls back to paho's path if
they are missing.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["PAHO_INTERNALS", "TESTED_PAHO", "BufferedSocket", "LeanClient", "wrap_socket"]

READ_AHEAD = 65536

_SUCCESS = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}  # shared, read-only
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class BufferedSocket:
    """A connected (plain or TLS) socket with read-ahead and write-behind; see the module docstring."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._in = b""
        self._in_pos = 0
        self._out = bytearray()
        self._error: OSError | None = None
        self.recv_error: BaseException | None = None  # why the last read failed (TLS alert...): see link_health
        self.eof = False  # the peer closed the connection

    # ----- what paho calls ---------------------------------------------------------------------------
    def recv(self, bufsize: int) -> bytes:
        if self._in_pos >= len(self._in):
            if self._error is not None:
                raise self._error
            try:
                data = self._sock.recv(READ_AHEAD)  # BlockingIOError / SSLWantReadError propagate to paho
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except OSError as e:
                self.recv_error = e
                raise
            if not data:
                self.eof = True
                return b""
            self._in, self._in_pos = data, 0
        end = self._in_pos + bufsize
        chunk = self._in[self._in_pos : end]
        self._in_pos = min(end, len(self._in))
        return chunk

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self._error is not None:
            raise self._error
        self._out += data
        return len(data)

    # ----- what the link thread calls ----------------------------------------------------------------
    @property
    def buffered_in(self) -> bool:
        """Bytes already read from the kernel (here, or decrypted inside a TLS socket) not yet given to paho."""
        if self._in_pos < len(self._in):
            return True
        pending = getattr(self._sock, "pending", None)  # ssl.SSLSocket: one TLS record may hold many packets
        return bool(pending is not None and pending())

    @property
    def buffered_out(self) -> bool:
        """Bytes paho has "sent" that are still waiting for ``flush``."""
        return bool(self._out)

    def flush(self) -> None:
        """Write what is buffered until done or the kernel buffer is full (select for writability then).

        A broken connection is remembered and raised from the next ``recv``, so paho sees it on its
        normal path (connection lost, on_disconnect, reconnect) instead of in the middle of a publish.
        """
        out = self._out
        while out and self._error is None:
            try:
                n = self._sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError as e:
                self._error = e
                out.clear()
                return
            del out[:n]

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def close(self) -> None:
        self._sock.close()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:  # pending(), getpeername(), ... of the wrapped socket
        return getattr(self._sock, name)


def wrap_socket(client: mqtt.Client, sock: Any | None = None) -> BufferedSocket | None:
    """Wrap ``client``'s freshly opened socket (from ``on_socket_open``, or after ``connect()``).

    None when there is none. Must run before paho writes to the socket through a path we do not flush: in
    ``on_socket_open`` the CONNECT packet is not yet sent, so it goes through the buffer like everything else.
    """
    sock = client.socket() if sock is None else sock
    if sock is None or isinstance(sock, BufferedSocket):
        return sock
    if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # we coalesce ourselves
    wrapped = BufferedSocket(sock)
    client._sock = wrapped  # paho has no public "use this socket" call
    return wrapped


# Every private paho name this module relies on; tests/unit/test_paho_shim.py checks them against the
# installed paho, so an upgrade that moves one fails a unit test instead of the agent in the field.
PAHO_INTERNALS: dict[str, tuple[str, ...]] = {
    "class": ("_handle_pubackcomp", "_do_on_publish", "_mid_generate", "_packet_read", "_loop_rc_handle",
              "loop_read"),
    "instance": ("_sock", "_in_packet", "_out_messages", "_in_messages", "_out_message_mutex", "_protocol",
                 "_out_packet", "_in_callback_mutex", "_last_msg_out", "_userdata"),
}
TESTED_PAHO = ("2.2.0",)  # pyproject pins paho-mqtt to these releases


class LeanClient(mqtt.Client):
    """``mqtt.Client`` with a cheap path for plain PUBACKs and for QoS 1 records (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lean_mids: set[int] = set()  # mids of records sent by publish_record, waiting for PUBACK
        self._lean_topics: dict[str, bytes] = {}  # topic -> its length-prefixed UTF-8 bytes

    def publish_record(self, topic: str, payload: bytes, retain: bool = False) -> tuple[MQTTErrorCode, int]:
        """Publish ``payload`` at QoS 1; ``(rc, mid)`` as ``publish`` would report them.

        ``on_publish`` is called with the PUBACK's reason code when it arrives. Falls back to paho's
        ``publish`` when paho has packets waiting, the connection is down or the socket is not a
        ``BufferedSocket``; ``drop_out_messages`` forgets the ids of both kinds.
        """
        sock = self._sock
        if not isinstance(sock, BufferedSocket) or self._out_packet or not self.is_connected():
            info = self.publish(topic, payload, qos=1, retain=retain)
            return info.rc, info.mid
        tb = self._lean_topics.get(topic)
        if tb is None:
            raw = topic.encode("utf-8")
            if b"+" in raw or b"#" in raw or len(raw) > 65535:
                raise ValueError(f"invalid publish topic {topic!r}")
            tb = len(raw).to_bytes(2, "big") + raw
            if len(self._lean_topics) < 256:
                self._lean_topics[topic] = tb
        mid = self._mid_generate()
        props = b"\x00" if self._protocol == mqtt.MQTTv5 else b""  # v5: an empty property set
        remaining = len(tb) + 2 + len(props) + len(payload)
        head = bytearray(((0x33 if retain else 0x32),))
        while True:  # variable byte integer (MQTT 2.2.3)
            byte, remaining = remaining & 0x7F, remaining >> 7
            head.append(byte | (0x80 if remaining else 0))
            if not remaining:
                break
        self._lean_mids.add(mid)
        sock.send(head + tb + mid.to_bytes(2, "big") + props + payload)
        self._last_msg_out = time.monotonic()  # paho's keepalive clock (it uses time.monotonic)
        return MQTTErrorCode.MQTT_ERR_SUCCESS, mid

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's ``loop_read``, counting ``publish_record``'s messages among those that may be answered."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        for _ in range(max(len(self._out_messages) + len(self._in_messages) + len(self._lean_mids), 1)):
            if self.socket() is None:  # closed by the previous packet
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def drop_out_messages(self) -> list[mqtt.MQTTMessage]:
        self._lean_mids.clear()
        return super().drop_out_messages()

    def _lean_ack(self, mid: int, code: int) -> MQTTErrorCode:
        """The PUBACK of a ``publish_record`` message: tell ``on_publish`` as paho's ``_do_on_publish`` would."""
        self._lean_mids.discard(mid)
        on_publish: Any = self.on_publish  # a VERSION2 callback: the link creates its client that way
        if on_publish:
            rc = _SUCCESS.get(code) or ReasonCode(PacketTypes.PUBACK, identifier=code)
            with self._in_callback_mutex:
                on_publish(self, self._userdata, mid, rc, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        try:
            packet = self._in_packet["packet"]
            v5 = self._protocol == mqtt.MQTTv5
        except (AttributeError, KeyError, TypeError):  # a paho without these internals
            return super()._handle_pubackcomp(cmd)
        n = len(packet)
        if cmd == "PUBACK" and n >= 2 and self._lean_mids:
            mid = (packet[0] << 8) | packet[1]
            if mid in self._lean_mids:  # v5 reason code (absent: success); any properties are ignored
                return self._lean_ack(mid, packet[2] if v5 and n >= 3 else 0)
        # Plain: mid (3.1.1), or mid + a success reason (< 0x80) + optionally an empty property length (v5).
        # Mosquitto answers 0x10 "no matching subscribers" when nobody listens: still a success.
        code = packet[2] if n >= 3 else 0
        plain = n == 2 or (v5 and (n == 3 or (n == 4 and packet[3] == 0)) and code in _SUCCESS)
        if cmd != "PUBACK" or not plain:  # PUBCOMP, a failure reason, properties: paho's full path
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _SUCCESS[code], _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
