"""Manager-API gateway: a ScaleTrade-compatible JSON-over-TCP server with durable finance commands."""

__version__ = "0.1.0"
