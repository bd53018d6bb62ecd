"""The MQTT shell: one paho-mqtt 2.x client (callback API v2) with a persistent session.

QoS 1, clean start false (MQTT 5 with a session expiry; MQTT 3.1.1 with clean_session false) so that a
restarting aggregator loses nothing: the broker queues for it. Deliveries are acknowledged to the broker
manually, after the store commit (``broker_ack = "after_commit"``), so a crash between receipt and commit
means redelivery, not loss. The network thread only wraps the message and hands it to ``on_message``
(which puts it on a bounded queue): verification and storage happen on the service's store thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from aggregator.config import MqttSettings
from aggregator.errors import BrokerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    """One delivery as received: the topic, the payload bytes untouched, and what is needed to ack it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    received_ms: int


class MqttLink:
    """Connects, (re)subscribes on every connect, delivers ``Inbound`` to a callback, publishes acks."""

    def __init__(self, settings: MqttSettings, subscriptions: Sequence[str],
                 on_message: Callable[[Inbound], None], clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self._on_inbound = on_message
        self._clock = clock
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._pending_subs: set[int] = set()
        self.connects = 0
        self.last_error = ""
        v5 = settings.protocol == "5"
        self._v5 = v5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)
        self.client.max_queued_messages_set(0)
        url = urlsplit(settings.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        if url.scheme == "mqtts" or settings.ca_file:
            self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        if settings.username:
            password = Path(settings.password_file).read_text().strip() if settings.password_file else None
            self.client.username_pw_set(settings.username, password)

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Connect and subscribe; raises ``BrokerError`` if not subscribed within ``timeout``."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.session_expiry_s
            props.ReceiveMaximum = self.settings.receive_maximum
        kwargs: dict[str, Any] = {"clean_start": False, "properties": props} if self._v5 else {}
        try:
            self.client.connect_async(self._host, self._port, self.settings.keepalive_s, **kwargs)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot connect to {self.settings.url}: {e}") from e
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise BrokerError(f"not connected and subscribed to {self.settings.url} within {timeout:.0f}s"
                              + (f": {self.last_error}" if self.last_error else ""))

    def stop(self) -> None:
        """Disconnect cleanly (the persistent session stays on the broker) and stop the network thread."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- paho callbacks (network thread) --------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("MQTT connect to %s refused: %s", self.settings.url, reason_code)
            return
        self.connects += 1
        self._connected.set()
        log.info("MQTT connected to %s as %s (session present: %s)", self.settings.url, self.settings.client_id,
                 getattr(flags, "session_present", None))
        # Status first, on its own: birth records teach keys before the records they sign arrive.
        for topic in self.subscriptions:
            opts: Any = SubscribeOptions(qos=1) if self._v5 else 1
            result, mid = client.subscribe([(topic, opts)])
            if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_subs.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        for rc in reason_codes:
            if rc.is_failure:
                self.last_error = f"subscription refused: {rc}"
                log.error("MQTT subscription (mid %d) refused: %s", mid, rc)
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("MQTT disconnected from %s: %s; reconnecting", self.settings.url, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        self._on_inbound(Inbound(topic, bytes(message.payload), message.mid, message.qos, bool(message.retain),
                                 int(self._clock() * 1000)))

    # ---- from the store thread ------------------------------------------------------------------------

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK one delivery to the broker (after its record is durable, or counted as rejected)."""
        if qos > 0:
            self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> mqtt.MQTTMessageInfo:
        """Publish QoS 1 (the durable acks); paho queues it while disconnected."""
        return self.client.publish(topic, payload, qos=1, retain=retain)
