"""Benchmarks: each prints ratios measured side by side in one run on identical inputs (`python -m bench`)."""
