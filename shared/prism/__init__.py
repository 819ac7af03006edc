"""Prism: cross-modal product search. Shared library used by every service and the CLI."""

__version__ = "0.1.0"
