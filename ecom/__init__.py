"""Shared core of the e-commerce lakehouse: settings, schemas, Spark, runtime and CLI."""

__version__ = "0.1.0"
