"""The package's version, apart from its face so that modules inside it can read it."""

__version__ = "0.1.0"
