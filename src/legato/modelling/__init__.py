"""Sérsic model images of any estimate and what follows from them.

Residuals and goodness of fit, Cramér-Rao bounds, inspection galleries (docs/fit_quality.md).
"""
