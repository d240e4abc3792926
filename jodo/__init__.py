"""jodo: pay-to-reconnect smart-meter control. CLI, config, front door and node bootstrap."""

__version__ = "0.1.0"
