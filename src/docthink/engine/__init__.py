"""Executors that run stages over datasets."""
