"""What a class leaves behind and for how long: session reports and exports (CSV, JSON, PDF),
the CSV escaping they share, and retention. Used by the gateway, the aggregator (retention) and
the CLI; depends only on the shared core (classpulse)."""
