"""Analysis of finished runs: aggregation, statistics, the paper's Tables 1-3, figures and the
ours-vs-paper replication report.

This package reads result files only (docs/architecture.md); it never imports `massl`, torch or
training code, so tables and figures can be rebuilt anywhere from a copied `results/` folder.
"""
