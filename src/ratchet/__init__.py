"""ratchet: the autoresearch loop as infrastructure."""

__version__ = "0.1.0"
