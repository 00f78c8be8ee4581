"""Adapters to the outside systems: the S3 object store and its bucket configuration."""
