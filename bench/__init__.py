"""Benchmarks (`make bench`): results go to bench/results/latest.json. Targets live here, never in unit tests."""
