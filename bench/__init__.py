"""Benchmarks that anyone can run; see BENCHMARKS.md for the figures and the commands."""
