"""The HTTP API (FastAPI + uvicorn): event ingest, training/drift callbacks, health.

``api.app.create_app`` builds the application from dependencies made once by the composition
root ``api.server``; ``api.temporal`` is the Temporal side of the callback handler's port.
"""
