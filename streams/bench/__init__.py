"""Benchmarks that run the real pipeline through a real broker (``recstream bench ...``).

:mod:`streams.bench.latency` holds the click -> recommendation latency benchmark;
:mod:`streams.bench.load` the processes it drives (synthetic catalogue, a fixed-rate click
sender, a bare relay). Importing this package is cheap: nothing heavy happens at import.
"""
