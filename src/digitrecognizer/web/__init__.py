"""The web app: FastAPI service and the drawing page."""
