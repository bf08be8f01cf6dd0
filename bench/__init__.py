"""Benchmarks of the toolkit against what a user would pick instead, as ratios from one run (`make bench`).

See bench/README.md; bench/run.py runs them and writes bench/results.md and bench/results.json.
"""
