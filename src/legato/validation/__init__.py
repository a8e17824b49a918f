"""Checking data before it is used: per-stamp summaries, Great Expectations suites and checkpoints, domain shift, scorable test sets."""
