"""Shared utilities: user-facing errors, repository paths."""
