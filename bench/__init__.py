"""Benchmarks of the pipeline against the bare computation (not part of the tests)."""
