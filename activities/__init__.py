"""Temporal activities: thin classes over services (heartbeats, failure mapping)."""
