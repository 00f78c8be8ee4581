"""The HTTP API (FastAPI + uvicorn): event ingest, training/drift callbacks, health.

``api.app.create_app`` builds the application from dependencies made once by the composition
root ``api.server``, which takes the callback handler's Temporal port from ``starter``.
"""
