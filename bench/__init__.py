"""Benchmarks (``concilium bench ...``): ratios measured side by side in one run,
printed as a table and as JSON. Absolute times on shared 2-core machines are noise;
the ratios between rows of the same run are the result."""

__all__: list[str] = []
