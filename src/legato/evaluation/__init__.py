"""Scoring estimators against the truth or labels into the committed reports: Table 1 and 2, Figure 3 and 5, coverage, realism."""
