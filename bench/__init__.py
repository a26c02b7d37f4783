"""Benchmarks: they measure and write JSON under bench/results/; the tests assert."""
