"""The MQTT link: one thread that owns the paho client, publishes outbox rows in seq order, and reads acks.

paho runs in external-loop mode (``loop_read``/``loop_write``/``loop_misc`` around our own ``select``), so
network I/O and publishing happen on one thread with no lock hand-offs, and an idle link wakes once a
second. The committer hands fresh rows over with ``notify``; everything else (resends after a reconnect, a
restart or an ack timeout) is read back from the outbox, which is the only source of truth.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import cbor2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import backoff_delay
from agent.mqtt_io import BufferedSocket, LeanClient, wrap_socket
from agent.outbox import OutboxReader, Row
from agent.settings import MqttConfig
from agent.topics import Topics

log = logging.getLogger(__name__)

OFFLINE_PAYLOAD = b"offline"
PACKET_OVERHEAD = 64  # fixed header, topic length field, packet id, v5 properties
DEAD_LINK_KEEPALIVES = 1.5  # silence from the broker longer than this many keepalives means a dead link


def record_budget(max_packet_bytes: int, topic: str) -> int:
    """Largest record that fits in one PUBLISH of at most ``max_packet_bytes`` on ``topic``."""
    return max_packet_bytes - len(topic.encode()) - PACKET_OVERHEAD


def parse_ack(payload: bytes) -> int:
    """Seq of an aggregator ack (CBOR map with integer ``seq``); ValueError on anything else."""
    try:
        obj = cbor2.loads(payload)
    except Exception as e:
        raise ValueError(f"ack is not CBOR: {e}") from e
    seq = obj.get("seq") if isinstance(obj, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"ack must be a CBOR map with a non-negative integer 'seq', got {obj!r:.80}")
    return seq


@dataclass
class LinkCounters:
    """Monotonic counters of the MQTT link, for telemetry and `edge-agent status`."""

    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    published: int = 0
    pubacks: int = 0
    publish_rejected: int = 0
    resends: int = 0
    acks: int = 0
    bad_acks: int = 0
    dead_link_detected: int = 0
    last_ack_seq: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)


class MqttLink:
    """Publishes outbox rows to the broker in seq order and reports acks and PUBACKs back."""

    def __init__(self, cfg: MqttConfig, device_id: str, delivery: str, reader: OutboxReader, *,
                 start_after_seq: int, on_ack: Callable[[int], None],
                 on_puback: Callable[[list[int]], None], resend_after_s: float, inflight_max: int) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.delivery = delivery
        self._reader = reader
        self._on_ack = on_ack
        self._on_puback = on_puback
        self._resend_after_s = resend_after_s
        self._inflight_max = inflight_max
        self.counters = LinkCounters()
        self._rng = random.Random()
        self._fresh: collections.deque[Row] = collections.deque()
        self._fresh_lock = threading.Lock()
        self._birth: Row | None = None
        self._cursor = start_after_seq  # highest seq handed to paho in this connection's order
        self._acked = start_after_seq if delivery == "aggregator" else 0
        self._last_progress = time.monotonic()
        self._last_in = time.monotonic()  # last time the socket was readable (our own clock: see _dead_link)
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._puback_seqs: list[int] = []
        self._connected = threading.Event()
        self._session_up = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.client = self._make_client(device_id)
        self.last_error: str | None = None

    # ----- construction -------------------------------------------------------------------------------
    def _make_client(self, device_id: str) -> mqtt.Client:
        v5 = self.cfg.protocol == "5"
        client = LeanClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id or device_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        url = urlsplit(self.cfg.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        if url.scheme == "mqtts" or self.cfg.ca_file or self.cfg.cert_file:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cfg.ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cfg.cert_file and self.cfg.key_file:
                ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
            client.tls_set_context(ctx)
        if self.cfg.username:
            password = None
            if self.cfg.password_file:
                with open(self.cfg.password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            client.username_pw_set(self.cfg.username, password)
        # Flow control is ours (``_pump`` keeps at most ``inflight_max`` rows out). paho's own limit would
        # rescan every queued message after each PUBACK (``_update_inflight``: O(inflight) per PUBACK).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ----- API for other threads ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def notify(self, rows: list[Row]) -> None:
        """Hand freshly committed rows (in seq order) to the link. Called by the committer thread."""
        with self._fresh_lock:
            self._fresh.extend(rows)
        self._wake()

    def hint_last_seq(self, seq: int) -> None:
        """Tell the link that rows up to ``seq`` exist in the outbox (at start, before any notify)."""
        self._reader_last_hint = max(self._reader_last_hint, seq)

    def set_birth(self, row: Row) -> None:
        """The retained birth record, re-published after every (re)connect so it replaces the will."""
        self._birth = row
        self._wake()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def alive(self) -> bool:
        """The link thread is running (it only ends at ``stop()``)."""
        return self._thread.is_alive()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, drain_timeout: float = 2.0) -> None:
        """Wait up to ``drain_timeout`` for in-flight PUBACKs, publish offline status, disconnect."""
        deadline = time.monotonic() + drain_timeout
        while (self._inflight or self._cursor < self._reader_last_hint) and self.connected \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._wake()
        self._thread.join(timeout=drain_timeout + 3)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    # ----- paho callbacks (run on the link thread) -----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            self.counters.connect_failures += 1
            self.last_error = f"broker refused connection: {rc}"
            log.error("broker %s:%d refused the connection: %s", self._host, self._port, rc)
            return
        self.counters.connects += 1
        client.subscribe(self.topics.ack, qos=1)
        self._session_up = True
        self._connected.set()
        self.last_error = None
        log.info("connected to %s:%d (%s)", self._host, self._port, "MQTT 5" if self.cfg.protocol == "5" else "3.1.1")
        if self._birth is not None:
            client.publish(self._birth.topic, self._birth.payload, qos=1, retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Properties | None) -> None:
        if self._session_up:
            self.counters.disconnects += 1
            if self._stop.is_set():
                log.info("disconnected from broker: %s", rc)
            else:
                log.warning("disconnected from broker: %s", rc)
        self._session_up = False
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Properties | None) -> None:
        seq = self._inflight.pop(mid, None)
        if rc.is_failure:
            self.counters.publish_rejected += 1
            key = str(rc)
            self.counters.rejected_reasons[key] = self.counters.rejected_reasons.get(key, 0) + 1
            log.error("broker rejected record seq %s: %s", seq, rc)
            return
        self.counters.pubacks += 1
        if seq is not None and self.delivery == "broker":
            self._puback_seqs.append(seq)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.topics.ack:
            return
        try:
            seq = parse_ack(bytes(msg.payload))
        except ValueError as e:
            self.counters.bad_acks += 1
            log.warning("ignoring malformed ack on %s: %s", msg.topic, e)
            return
        self.counters.acks += 1
        self.counters.last_ack_seq = seq
        if seq > self._acked:
            self._acked = seq
            self._last_progress = time.monotonic()
        self._on_ack(seq)

    # ----- the loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self.client.socket() is None or not self._socket_alive():
                try:
                    self._connect()
                    attempt = 0
                except (OSError, ssl.SSLError, ValueError) as e:
                    self.counters.connect_failures += 1
                    delay = backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng)
                    attempt += 1
                    self.last_error = f"cannot connect to {self._host}:{self._port}: {e}"
                    log.warning("%s; retrying in %.1fs", self.last_error, delay)
                    self._sleep(delay)
                    continue
            try:
                self._step()
            except Exception:  # a bug must not kill the link thread silently
                log.exception("MQTT link step failed; reconnecting")
                self._drop_connection()
                self._sleep(backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng))
                attempt += 1
        self._shutdown()

    def _socket_alive(self) -> bool:
        return self.client.socket() is not None and not self._dead_link()

    def _connect(self) -> None:
        self._drop_connection()
        self._inflight.clear()
        if self.delivery == "aggregator":
            self._cursor = self._acked
        else:
            first = self._reader.first_seq()
            self._cursor = (first - 1) if first is not None else self._cursor
        with self._fresh_lock:
            self._fresh.clear()
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self.client.connect(self._host, self._port, keepalive=self.cfg.keepalive_s, clean_start=True,
                                properties=props)
        else:  # MQTT 3.1.1: clean_session was set on the client
            self.client.connect(self._host, self._port, keepalive=self.cfg.keepalive_s)
        wrap_socket(self.client)  # read-ahead and write-behind: agent.mqtt_io
        self._last_progress = time.monotonic()
        self._last_in = time.monotonic()

    def _drop_connection(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
            self.client._sock = None  # paho has no public "forget the dead socket" call
        # The outbox decides what is re-sent after a reconnect; paho must not replay its own copies too.
        with self.client._out_message_mutex:
            self.client._out_messages.clear()
        if self._session_up:
            self.counters.disconnects += 1
        self._session_up = False
        self._connected.clear()

    def _dead_link(self) -> bool:
        """True when nothing arrived for 1.5 keepalives although paho pings at least every keepalive.

        The clock is our own (``_last_in``, set whenever the socket is readable), not paho's private
        ``_last_bytes_received``: paho resets that one to "now" each time it *sends* a PINGREQ, which pushed
        detection out to about two keepalives. A healthy idle link answers a ping within about one keepalive
        plus one loop turn (1 s), so 1.5 keepalives leaves half a keepalive for the round trip, and a dead
        link is noticed within 1.5 keepalives plus one loop turn.
        """
        if not self._session_up:
            return False
        silent = time.monotonic() - self._last_in
        if silent > DEAD_LINK_KEEPALIVES * self.cfg.keepalive_s:
            self.counters.dead_link_detected += 1
            self.last_error = f"no traffic from the broker for {silent:.0f}s (keepalive {self.cfg.keepalive_s}s)"
            log.warning("no traffic from broker for %.1fs (keepalive %ds): connection is dead, reconnecting",
                        silent, self.cfg.keepalive_s)
            return True
        return False

    def _step(self) -> None:
        sock = self.client.socket()
        if sock is None:
            return
        bsock = sock if isinstance(sock, BufferedSocket) else None
        wants_write = self.client.want_write() or (bsock is not None and bsock.buffered_out)
        timeout = 0.0 if self._has_work() or (bsock is not None and bsock.buffered_in) else 1.0
        rlist: list[Any] = [sock, self._wake_r]
        r, w, _ = select.select(rlist, [sock] if wants_write else [], [], timeout)
        if self._wake_r in r:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if sock in r or (bsock is not None and bsock.buffered_in):
            self._last_in = time.monotonic()
            self.client.loop_read()
            while bsock is not None and bsock.buffered_in and self.client.socket() is bsock:
                self.client.loop_read()  # select cannot see bytes already read ahead
        if self.client.socket() is not None and (sock in w or self.client.want_write()):
            self.client.loop_write()
        self.client.loop_misc()
        if self._puback_seqs:
            seqs, self._puback_seqs = self._puback_seqs, []
            self._on_puback(seqs)
        if self._session_up:
            self._check_resend()
            self._pump()
        self._flush()  # one send for everything this turn queued

    def _has_work(self) -> bool:
        if not self._session_up or len(self._inflight) >= self._inflight_max:
            return False
        return bool(self._fresh) or self._cursor < self._reader_last_hint

    _reader_last_hint = 0

    def _check_resend(self) -> None:
        """Aggregator mode: when acks stop advancing while rows are out, send again from the last ack."""
        if self.delivery != "aggregator" or self._cursor <= self._acked:
            self._last_progress = time.monotonic()
            return
        if time.monotonic() - self._last_progress > self._resend_after_s:
            log.warning("no ack beyond seq %d for %.0fs: re-sending %d records", self._acked,
                        self._resend_after_s, self._cursor - self._acked)
            self.counters.resends += self._cursor - self._acked
            self._cursor = self._acked
            self._last_progress = time.monotonic()

    def _pump(self) -> None:
        budget = self._inflight_max - len(self._inflight)
        while budget > 0:
            rows = self._next_rows(budget)
            if not rows:
                return
            for row in rows:
                info = self.client.publish(row.topic, row.payload, qos=1, retain=row.retain)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning("publish of seq %d failed locally: %s", row.seq, mqtt.error_string(info.rc))
                    return
                self._inflight[info.mid] = row.seq
                self._cursor = row.seq
                self.counters.published += 1
                budget -= 1
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    return
            if self.client.want_write():
                self.client.loop_write()

    def _next_rows(self, limit: int) -> list[Row]:
        with self._fresh_lock:
            while self._fresh and self._fresh[0].seq <= self._cursor:
                self._fresh.popleft()
            if self._fresh and self._fresh[0].seq == self._cursor + 1:
                n = min(limit, len(self._fresh))
                rows = [self._fresh.popleft() for _ in range(n)]
                self._reader_last_hint = max(self._reader_last_hint, rows[-1].seq)
                return rows
            if self._fresh:
                self._reader_last_hint = max(self._reader_last_hint, self._fresh[-1].seq)
        rows = self._reader.rows_after(self._cursor, min(limit, 500))
        if rows:
            self._reader_last_hint = max(self._reader_last_hint, rows[-1].seq)
        return rows

    def _shutdown(self) -> None:
        if self._session_up:
            try:
                self.client.publish(self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True)
                deadline = time.monotonic() + 1.0
                while self._unsent() and time.monotonic() < deadline:
                    self.client.loop_write()
                    self._flush()
                    if self._unsent():
                        time.sleep(0.005)
                self.client.disconnect()
                self.client.loop_write()
                self._flush()
            except (OSError, ValueError):
                pass
        self._drop_connection()

    def _unsent(self) -> bool:
        sock = self.client.socket()
        return self.client.want_write() or (isinstance(sock, BufferedSocket) and sock.buffered_out)

    def _flush(self) -> None:
        sock = self.client.socket()
        if isinstance(sock, BufferedSocket):
            sock.flush()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([self._wake_r], [], [], left)
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
