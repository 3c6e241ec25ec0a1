"""ClassPulse: shared contracts (settings, wire schemas, stream names, tables) and the CLI."""

__version__ = "0.1.0"
