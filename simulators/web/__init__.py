"""The HTTP front: one FastAPI application serving every simulator's routes."""
