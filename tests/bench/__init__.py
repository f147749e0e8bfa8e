"""Benchmarks: scripts, not tests (see README.md). pytest collects nothing here."""
