"""Benchmarks: each module measures a figure and its baseline in the same run (see docs/benchmarks.md)."""
