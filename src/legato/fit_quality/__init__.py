"""See the fit: model and residual images of any estimate, goodness of fit, galleries (docs/fit_quality.md)."""
