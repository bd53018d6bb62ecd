"""Sensor sources behind one interface (``Source``); ``make_source`` picks one from the pipeline config."""

from __future__ import annotations

from agent.settings import ReplaySourceConfig, SerialSourceConfig, SimulatedSourceConfig, SourceConfig
from agent.sources.base import CLOCK_GNSS, CLOCK_NTP, CLOCK_UNSYNCED, SampleBlock, Source

__all__ = ["CLOCK_GNSS", "CLOCK_NTP", "CLOCK_UNSYNCED", "SampleBlock", "Source", "make_source"]


def make_source(stream: str, cfg: SourceConfig) -> Source:
    """Build the source a pipeline's ``[pipeline.source]`` table describes."""
    if isinstance(cfg, SimulatedSourceConfig):
        from agent.sources.simulated import SimulatedSource  # noqa: PLC0415 - load only what is used

        return SimulatedSource(stream, cfg)
    if isinstance(cfg, ReplaySourceConfig):
        from agent.sources.replay import ReplaySource  # noqa: PLC0415

        return ReplaySource(stream, cfg)
    if isinstance(cfg, SerialSourceConfig):
        from agent.sources.serial import SerialSensorSource  # noqa: PLC0415

        return SerialSensorSource(stream, cfg)
    raise TypeError(f"unknown source config {type(cfg).__name__}")
