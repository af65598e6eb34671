"""Manager-API gateway: ScaleTrade-compatible JSON over TCP with durable finance commands."""

__version__ = "0.1.0"
