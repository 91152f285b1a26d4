"""stimserver: a self-hosted, Bread-compatible stim server backed by files."""

__version__ = "0.1.0"
