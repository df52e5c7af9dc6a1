"""Caching and fetching of file bytes: the block cache and what fills it."""
