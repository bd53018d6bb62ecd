"""The device daemon: sources → windows → int8 inference → signed records → durable outbox → MQTT."""

__version__ = "0.1.0"

__all__ = ["__version__"]
