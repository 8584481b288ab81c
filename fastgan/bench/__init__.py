"""Benchmark code shared by `fastgan bench` and the pytest-benchmark suites in benchmarks/."""
