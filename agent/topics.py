"""Topic names of DESIGN §5, built in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The topics of one device under ``prefix``."""

    prefix: str
    device_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    def result(self, stream: str) -> str:
        return f"{self.base}/result/{stream}"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def gap(self) -> str:
        return f"{self.base}/gap"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"
