"""Hostile and careless clients (issue #18)."""
