"""A paho subscriber that records every message it receives, for asserting on what reached the broker."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.wait import wait_for


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class Recorder:
    """Subscribes to ``topics`` at QoS 1 and keeps every message in arrival order."""

    def __init__(self, url: str, topics: list[str], client_id: str | None = None) -> None:
        u = urlsplit(url)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self._topics = topics
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883, keepalive=30)
        self.client.loop_start()
        wait_for(self._subscribed.is_set, timeout=10, what="subscription")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def count(self, suffix: str = "") -> int:
        """Messages whose topic contains ``suffix``."""
        with self._lock:
            return sum(1 for m in self.messages if suffix in m.topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
