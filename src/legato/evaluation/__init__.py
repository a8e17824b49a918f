"""Scoring estimates against true parameters: R², per-bin bias, scatter, outliers, plots."""
