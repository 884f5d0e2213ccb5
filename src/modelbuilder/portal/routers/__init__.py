"""The portal's routers, one per resource (FastAPI "bigger applications" layout)."""
