"""Studies over many runs: benchmark (train, predict, evaluate several models under one protocol) and comparison.

Modules are imported on use (nothing happens at import time): :mod:`mambaseg.study.benchmark`.
"""
