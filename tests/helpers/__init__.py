"""Shared builders for tests (real files, made in the tests; no fixtures from /work/shared)."""
