"""Shared test setup: one thread per test process (CI machines have 2 cores), headless plots."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


# --- analysis/ tests (test_tables, test_stats, ...: `pytest.mark.usefixtures("method_table")`) ---
import pytest  # noqa: E402


@pytest.fixture
def method_table():
    """The library's method table installed for analysis/, as each analysis CLI's --config does."""
    from analysis_fixtures import installed_method_table

    with installed_method_table() as table:
        yield table
