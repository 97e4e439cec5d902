"""The web front: a FastAPI app (REST API under /v1, the gallery when bot.web.gallery exists)."""
