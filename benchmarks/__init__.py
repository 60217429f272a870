"""Benchmarks: scripts that measure figures side by side in one run (see BENCHMARKS.md).

Each module runs on its own (``python -m benchmarks.<name> [--quick] [--json]``);
``python -m benchmarks.run_all --quick`` runs them all. No figure here is a test assertion:
the machine they run on may be shared and busy, so compare ratios measured in the same run.
"""
