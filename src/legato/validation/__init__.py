"""Data validation: per-stamp summary statistics, Great Expectations suites and checkpoints, domain shift."""
