"""The MQTT link: the thin paho shell around the delivery core (``agent.delivery``).

One thread owns the paho client in external-loop mode (``loop_read``/``loop_write``/``loop_misc`` around our
own ``select``), so network I/O and publishing happen on one thread with no lock hand-offs, and an idle link
wakes once a second. What to publish, when to re-send, what may be deleted and when the link is dead is
decided by ``DeliveryCore``; this module turns paho callbacks (``on_connect``, ``on_socket_open``,
``on_socket_close``, ``on_publish``, ``on_message``) into its events and carries out its actions. paho is
used through its public API only; the few private attributes that are unavoidable live in ``agent.mqtt_io``.

The committer hands fresh rows over with ``notify``; everything else (resends after a reconnect, a restart
or a receipt timeout) is read back from the outbox, which is the only source of truth. Refused connects are
classified and timed by ``agent.link_health``; receipts are verified by ``agent.receipts`` before the core
sees them.
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import backoff_delay
from agent.delivery import (
    Action,
    BirthCommitted,
    Connected,
    DeleteSeqs,
    DeleteThrough,
    DeliveryCore,
    Disconnected,
    Event,
    Inbound,
    KeepReceipt,
    NewRows,
    PubAck,
    PublishNext,
    ReceiptInvalid,
    ReceiptVerified,
    Reconnect,
    RepublishBirth,
    Scanned,
    Sent,
    Tick,
)
from agent.link_health import ConnectHealth, classify
from agent.mqtt_io import BufferedSocket, LeanClient, wrap_socket
from agent.outbox import OutboxReader, Row
from agent.receipts import Held, ReceiptChecker, ReceiptRefused
from agent.settings import MqttConfig
from agent.topics import Topics
from envelope.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

OFFLINE_PAYLOAD = b"offline"
PACKET_OVERHEAD = 64  # fixed header, topic length field, packet id, v5 properties
READ_BATCH = 500  # rows per outbox read when re-sending


def record_budget(max_packet_bytes: int, topic: str, limits: Limits = DEFAULT_LIMITS) -> int:
    """Largest record the agent commits for ``topic``: it fits one PUBLISH of at most ``max_packet_bytes``,
    and an aggregator with the shared default limits accepts it (``limits.max_record_bytes``, envelope.limits):
    a record the aggregator would refuse as oversize is refused here, before it takes a seq in the outbox."""
    return min(max_packet_bytes - len(topic.encode()) - PACKET_OVERHEAD, limits.max_record_bytes)


@dataclass
class LinkCounters:
    """Monotonic counters of the connection itself (delivery counters are the core's)."""

    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0


class MqttLink:
    """Publishes outbox rows to the broker in seq order and reports settled receipts and PUBACKs back."""

    def __init__(self, cfg: MqttConfig, device_id: str, delivery: str, reader: OutboxReader, *,
                 epoch: int, settled: int, last_seq: int,
                 on_receipt: Callable[[ReceiptVerified], None], on_settled: Callable[[int], None],
                 on_puback: Callable[[list[int]], None], resend_after_s: float, inflight_max: int,
                 receipts: ReceiptChecker | None = None, kept_receipt: ReceiptVerified | None = None,
                 degraded_after_s: float = 120.0) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.delivery = delivery
        self._reader = reader
        self._on_receipt = on_receipt
        self._on_settled = on_settled
        self._on_puback = on_puback
        self._receipts = receipts
        now = time.monotonic()
        best = (kept_receipt.epoch, kept_receipt.settled, kept_receipt.time_ms) if kept_receipt else None
        self.core = DeliveryCore(delivery, epoch=epoch, settled=settled, last_seq=last_seq,
                                 inflight_max=inflight_max, resend_after_s=resend_after_s,
                                 keepalive_s=cfg.keepalive_s, now=now, best_receipt=best)
        self.core.last_receipt = kept_receipt
        self.health = ConnectHealth(degraded_after_s, now)
        self.counters = LinkCounters()
        self._rng = random.Random()
        self._fresh: collections.deque[Row] = collections.deque()
        self._fresh_last = 0
        self._fresh_lock = threading.Lock()
        self._birth: Row | None = None
        self._birth_new = False
        self._puback_seqs: list[int] = []
        self._connected = threading.Event()
        self._session_up = False
        self._connack_refusal: str | None = None
        self._session_failed = False  # the last socket closed before its session came up: back off
        self._bsock: BufferedSocket | None = None
        self._reconnect_now = False
        self._expect_close = False  # our own reconnect is closing the old socket: not a refused connect
        self._invalid_logged: dict[str, int] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pipe_open = True
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.client = self._make_client(device_id)
        self.last_error: str | None = None

    # ----- construction -------------------------------------------------------------------------------
    def _make_client(self, device_id: str) -> LeanClient:
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
        # Flow control is the core's (at most ``inflight_max`` rows out). paho's own limit would rescan every
        # queued message after each PUBACK (``_update_inflight``: O(inflight) per PUBACK).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, OFFLINE_PAYLOAD, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        return client

    # ----- API for other threads ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def notify(self, rows: list[Row]) -> None:
        """Hand freshly committed rows (in seq order) to the link. Called by the committer thread."""
        with self._fresh_lock:
            self._fresh.extend(rows)
            self._fresh_last = max(self._fresh_last, rows[-1].seq) if rows else self._fresh_last
        self._wake()

    def set_birth(self, row: Row) -> None:
        """The retained birth record, re-published after every (re)connect so it replaces the will."""
        with self._fresh_lock:
            self._birth = row
            self._birth_new = True
        self._wake()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def alive(self) -> bool:
        """The link thread is running (it only ends at ``stop()``)."""
        return self._thread.is_alive()

    def stop(self, drain_timeout: float = 2.0, join_timeout: float = 3.0) -> bool:
        """Wait up to ``drain_timeout`` for in-flight PUBACKs, publish offline status, disconnect.

        Returns False when the thread did not end in time: the wake-up pipe then stays open (the thread may
        still use it) and the caller must not close what the thread reads (the outbox reader).
        """
        deadline = time.monotonic() + drain_timeout
        while self._thread.is_alive() and self.connected and not self.core.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._wake()
        if self._thread.ident is not None:
            self._thread.join(timeout=join_timeout)
        if self._thread.is_alive():
            log.error("MQTT link thread did not stop within %.0fs; leaving its resources open", join_timeout)
            return False
        self._close_pipe()
        return True

    def _close_pipe(self) -> None:
        if self._pipe_open:
            self._pipe_open = False
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wake(self) -> None:
        if not self._pipe_open:
            return
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    # ----- status ---------------------------------------------------------------------------------------
    def counters_doc(self) -> dict[str, Any]:
        """Counters of connection, delivery and receipts (flat), for status and telemetry."""
        c = self.core.counters
        return {**vars(self.counters), **{k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(c).items()},
                **self.health.doc(time.monotonic())}

    # ----- paho callbacks (run on the link thread) -----------------------------------------------------
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._bsock = wrap_socket(client, sock)  # read-ahead and write-behind: agent.mqtt_io
        self._connack_refusal = None
        self._session_up = False

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        now = time.monotonic()
        if self._expect_close:
            pass
        elif self._session_up:
            self.counters.disconnects += 1
            bs = self._bsock
            why = bs.recv_error if bs is not None and bs.recv_error is not None else ("closed by the broker"
                                                                                      if bs and bs.eof else "")
            if self._stop.is_set():
                log.info("disconnected from broker")
            else:
                log.warning("disconnected from broker %s:%d%s", self._host, self._port, f": {why}" if why else "")
            self._feed(Disconnected(now))
            self.health.disconnected(now)
        elif not self._stop.is_set():
            bs = self._bsock
            cause, detail = classify(bs.recv_error if bs is not None else None, connack=self._connack_refusal)
            self._refused(cause, detail, now)
            self._session_failed = True
        self._session_up = False
        self._connected.clear()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            self._connack_refusal = str(rc)
            return
        now = time.monotonic()
        self.counters.connects += 1
        client.subscribe(self.topics.ack, qos=1)
        self._session_up = True
        self._session_failed = False
        self._connected.set()
        self.last_error = None
        if self.health.connected(now):
            log.info("connected to %s:%d (%s) after refused connects", self._host, self._port, self._proto())
        else:
            log.info("connected to %s:%d (%s)", self._host, self._port, self._proto())
        first = self._reader.first_seq() if self.delivery == "broker" else None
        self._feed(Connected(now, first))

    def _proto(self) -> str:
        return "MQTT 5" if self.cfg.protocol == "5" else "3.1.1"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            seq = self.core.inflight.get(mid)
            log.error("broker rejected record seq %s: %s", seq, rc)
            self._feed(PubAck(mid, False, str(rc)))
        else:
            self._feed(PubAck(mid))  # the reason string is only read for refusals (str(rc) is a table lookup)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.topics.ack or self.delivery != "aggregator":
            return
        data = bytes(msg.payload)
        if not data:  # a retained receipt being cleared
            return
        now = time.monotonic()
        if self._receipts is None:
            self._invalid_receipt(ReceiptRefused("no_trust_anchor", "no fleet CA configured"), now)
            return
        try:
            receipt = self._receipts.check(data, now, held=self._held() if self._receipts.witness else None)
        except ReceiptRefused as e:
            self._invalid_receipt(e, now)
            return
        self._feed(receipt)
        if self._receipts.witness is not None:
            for later in self._receipts.retry_pending(now, self._held()):
                self._feed(later)

    def _held(self) -> Held:
        """The outbox rows the log check may need (this thread owns the reader)."""
        reader = self._reader

        def record(seq: int) -> bytes | None:
            rows = reader.rows_after(seq - 1, 1)
            return rows[0].payload if rows and rows[0].seq == seq else None

        first = reader.first_seq()
        return Held(first, max(self.core.last_seq, first or 0), record)

    def _invalid_receipt(self, e: ReceiptRefused, now: float) -> None:
        n = self._invalid_logged.get(e.reason, 0) + 1
        self._invalid_logged[e.reason] = n
        if n == 1 or n % 100 == 0:
            log.warning("ignoring an invalid receipt on %s (%s; %d so far): nothing deleted",
                        self.topics.ack, e, n)
        self._feed(ReceiptInvalid(e.reason, now))

    # ----- the core ---------------------------------------------------------------------------------------
    def _feed(self, ev: Event) -> None:
        pending: collections.deque[Action] = collections.deque(self.core.handle(ev))
        while pending:
            pending.extend(self._execute(pending.popleft()))

    def _execute(self, act: Action) -> list[Action]:
        if isinstance(act, PublishNext):
            return self._publish_next(act)
        if isinstance(act, KeepReceipt):
            self._on_receipt(act.receipt)
        elif isinstance(act, DeleteThrough):
            self._on_settled(act.seq)
        elif isinstance(act, DeleteSeqs):
            self._puback_seqs.extend(act.seqs)
        elif isinstance(act, RepublishBirth):
            birth = self._birth
            if birth is not None and birth.seq == act.seq and self.client.socket() is not None:
                self.client.publish(birth.topic, birth.payload, qos=1, retain=True)
        elif isinstance(act, Reconnect):
            self.last_error = act.reason
            log.warning("%s: connection is dead, reconnecting", act.reason)
            self._reconnect_now = True
            self._session_up = False
            self._connected.clear()
            self.counters.disconnects += 1
            self.health.disconnected(time.monotonic())
        return []

    def _publish_next(self, act: PublishNext) -> list[Action]:
        rows, from_fresh = self._rows(act)
        out: list[Action] = []
        ok = True
        publish = self.client.publish_record  # QoS 1 straight into the socket buffer (agent.mqtt_io)
        for row in rows:
            rc, mid = publish(row.topic, row.payload, row.retain)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("publish of seq %d failed locally: %s", row.seq, mqtt.error_string(rc))
                ok = False
                break
            out += self.core.handle(Sent(row.seq, mid))
            if rc == mqtt.MQTT_ERR_NO_CONN:
                ok = False
                break
        if from_fresh:
            exhausted = ok and bool(rows) and rows[-1].seq >= act.upto
        else:
            exhausted = ok and len(rows) < min(act.limit, READ_BATCH)
        if self.client.want_write():
            self.client.loop_write()
        return out + self.core.handle(Scanned(act.upto, exhausted))

    def _rows(self, act: PublishNext) -> tuple[list[Row], bool]:
        """Rows ``after < seq <= upto``: fresh ones from memory when they continue the cursor, else the outbox."""
        with self._fresh_lock:
            while self._fresh and self._fresh[0].seq <= act.after:
                self._fresh.popleft()
            if self._fresh and self._fresh[0].seq == act.after + 1:
                rows: list[Row] = []
                expect = act.after + 1
                while self._fresh and len(rows) < act.limit and self._fresh[0].seq == expect <= act.upto:
                    rows.append(self._fresh.popleft())
                    expect += 1
                return rows, True
        rows = self._reader.rows_after(act.after, min(act.limit, READ_BATCH))
        return [r for r in rows if r.seq <= act.upto], False

    # ----- the loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self.client.socket() is None or self._reconnect_now:
                if self._session_failed:  # refused before CONNACK (TLS alert, CONNACK refusal): back off
                    self._session_failed = False
                    self._sleep(backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s,
                                              self._rng))
                    attempt += 1
                    if self._stop.is_set():
                        break
                try:
                    self._connect()
                except (OSError, ssl.SSLError, ValueError) as e:
                    self.counters.connect_failures += 1
                    cause, detail = classify(e)
                    self._refused(cause, detail, time.monotonic(), count=False)
                    self.last_error = f"cannot connect to {self._host}:{self._port}: {detail} ({cause})"
                    self._sleep(backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s,
                                              self._rng))
                    attempt += 1
                    continue
            if self._session_up:
                attempt = 0
            try:
                self._step()
            except Exception:  # a bug must not kill the link thread silently
                log.exception("MQTT link step failed; reconnecting")
                self._reconnect_now = True
                self._feed(Disconnected(time.monotonic()))
                self._sleep(backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng))
                attempt += 1
        self._shutdown()

    def _refused(self, cause: str, detail: str, now: float, *, count: bool = True) -> None:
        if count:
            self.counters.connect_failures += 1
            self.last_error = f"broker {self._host}:{self._port} refused the connection: {detail} ({cause})"
        if self.health.refused(cause, detail, now, time.time()):
            log.error("cannot connect to broker %s:%d: %s (%s); retrying with backoff, logged again when the "
                      "cause changes", self._host, self._port, detail, cause)

    def _connect(self) -> None:
        """(Re)connect; paho closes the old socket first (``on_socket_close``)."""
        self._reconnect_now = False
        self.client.drop_out_messages()  # the outbox decides what is re-sent; paho must not replay its copies
        with self._fresh_lock:
            self._fresh.clear()
        self._feed(Disconnected(time.monotonic()))
        props: Properties | None = None
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self._expect_close = True
        try:
            if self.cfg.protocol == "5":
                self.client.connect(self._host, self._port, keepalive=self.cfg.keepalive_s, clean_start=True,
                                    properties=props)
            else:  # MQTT 3.1.1: clean_session was set on the client
                self.client.connect(self._host, self._port, keepalive=self.cfg.keepalive_s)
        finally:
            self._expect_close = False
        self._feed(Inbound(time.monotonic()))

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
            self._drain_wake()
        if sock in r or (bsock is not None and bsock.buffered_in):
            self._feed(Inbound(time.monotonic()))
            self.client.loop_read()
            while bsock is not None and bsock.buffered_in and self.client.socket() is bsock:
                self.client.loop_read()  # select cannot see bytes already read ahead
        if self.client.socket() is not None and (sock in w or self.client.want_write()):
            self.client.loop_write()
        self.client.loop_misc()
        self._take_handoffs()
        if self._puback_seqs:
            seqs, self._puback_seqs = self._puback_seqs, []
            self._on_puback(seqs)
        self._feed(Tick(time.monotonic()))
        self._flush()  # one send for everything this turn queued

    def _take_handoffs(self) -> None:
        with self._fresh_lock:
            last = self._fresh_last
            birth = self._birth if self._birth_new else None
            self._birth_new = False
        if last > self.core.last_seq:
            self._feed(NewRows(last))
        if birth is not None:
            self._feed(BirthCommitted(birth.seq))

    def _has_work(self) -> bool:
        core = self.core
        if not core.connected or len(core.inflight) >= core.inflight_max:
            return False
        return core.cursor < max(core.last_seq, self._fresh_last) or self._birth_new

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
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._session_up = False
        self._connected.clear()

    def _unsent(self) -> bool:
        sock = self.client.socket()
        return self.client.want_write() or (isinstance(sock, BufferedSocket) and sock.buffered_out)

    def _flush(self) -> None:
        sock = self.client.socket()
        if isinstance(sock, BufferedSocket):
            sock.flush()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([self._wake_r], [], [], left)
            self._drain_wake()
