"""Shared fixture of the benchmark-script tests: a script of ``benchmarks/`` imported as a module."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def load_benchmark(monkeypatch):
    """``load_benchmark("scan")`` imports ``benchmarks/scan.py`` under a private name, with ``benchmarks/`` (for its
    sibling helpers) and ``src/`` on ``sys.path`` for the test only."""

    def load(name: str):
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
        monkeypatch.syspath_prepend(str(ROOT / "src"))
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
