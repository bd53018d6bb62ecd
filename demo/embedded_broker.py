"""An embedded pure-Python MQTT broker (amqtt) on a loopback port, for the demo only (``edge-demo``).

amqtt speaks MQTT 3.1.1 only, so agent and aggregator use 3.1.1 against it. It runs its asyncio loop on
its own thread; ``stop()`` shuts it down. Production deployments use Mosquitto (docs/broker.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from agent.errors import AgentError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """amqtt on ``127.0.0.1:<port>``, anonymous, no persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional `demo` extra
        except ImportError as e:
            raise AgentError("the embedded broker needs the demo extra: pip install 'depin-edge-agent[demo]', "
                             "or pass --broker mqtt://host:port") from e
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._thread.start()

        async def _start() -> Any:
            broker = Broker(config, loop=self._loop)
            await broker.start()
            return broker

        try:
            self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout)
        except Exception as e:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise AgentError(f"embedded broker could not start on 127.0.0.1:{self.port}: {e}") from e
        log.info("embedded MQTT 3.1.1 broker (amqtt) listening on 127.0.0.1:%d", self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout)
            except Exception as e:  # shutting down a demo: report, don't raise
                log.warning("embedded broker shutdown: %s", e)
            self._broker = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
