"""Datasets: discovery, validation, preprocessing, the synthetic benchmark, splits and sampling."""
