"""TeleOps benchmarks: each measures TeleOps and a real peer side by side in the same run.

Run `python -m bench` (or `scripts/bench`); see docs/benchmarks.md for what each benchmark measures.
"""
