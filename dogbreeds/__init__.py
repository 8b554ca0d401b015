"""Dog breed classification: a CNN and a fully-connected network compared on Stanford Dogs photos."""

__version__ = "0.1.0"
