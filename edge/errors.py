"""The edge agent's errors: one root, a few named by meaning."""


class EdgeError(Exception):
    """Root of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """A configuration file or value is invalid; the message names the key."""
