"""Seedbed: retrieval-augmented dataset synthesis. Importing this package does no work."""

__version__ = "0.1.0"
