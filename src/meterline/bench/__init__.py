"""Benchmarks behind ``meterline bench``: each prints its figures and a same-run baseline."""
