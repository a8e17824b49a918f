"""The Sérsic parameters by name: table columns, their units, and how errors of each are measured.

Every module that reads or writes a parameter column takes its name from here.

- *Parameters* (``PARAMETERS``) are the names of the paper's tables and metrics
  (``re`` is the effective radius whatever its unit); :data:`COLUMN` gives each
  one's table column.
- *Columns* are what catalogues hold: ``mag`` (total AB magnitude),
  ``re_arcsec`` (semi-major half-light radius, arcsec), ``n`` (Sérsic index),
  ``q`` (axis ratio b/a) and ``ellipticity`` (``1 - q``); see
  :mod:`legato.conventions` for the definitions.
"""

from __future__ import annotations

#: Parameters of the paper's tables (Table 1, Figure 3) and of every metric.
PARAMETERS = ("mag", "re", "n", "ellipticity")
#: The table column of each parameter.
COLUMN = {"mag": "mag", "re": "re_arcsec", "n": "n", "ellipticity": "ellipticity"}
#: Parameters whose errors are relative, ``(true - estimate) / true``.
RELATIVE = frozenset({"re", "n"})
#: The four measured Sérsic columns: network targets, fitter starts, estimates a model is rendered from.
SERSIC_COLUMNS = ("mag", "re_arcsec", "n", "ellipticity")
#: Columns regressed in log space by the networks.
LOG_COLUMNS = frozenset({"re_arcsec", "n"})
#: Interval level -> suffix of its half-width columns (``mag_err``, ``mag_err95``, ...).
ERROR_SUFFIXES = {"68": "_err", "95": "_err95"}
#: Interval level -> the share of the errors its half-width holds (calibrated as quantiles of |error|).
INTERVAL_LEVELS = {"68": 0.6827, "95": 0.95}
#: Sérsic columns of a predicted catalogue (the axis ratio beside the ellipticity).
OUTPUT_COLUMNS = ("mag", "re_arcsec", "n", "q", "ellipticity")
#: Columns of a classical label (the fit's position angle with the outputs).
LABEL_COLUMNS = (*OUTPUT_COLUMNS, "pa_deg")
#: Parameters a simulated galaxy is drawn with (position angle and centre offset included).
SIMULATED_COLUMNS = ("mag", "re_arcsec", "n", "q", "pa_deg", "x_offset_pix", "y_offset_pix")
#: Units of the output columns (FITS/Parquet metadata); empty: dimensionless.
UNITS = {"mag": "mag", "re_arcsec": "arcsec", "n": "", "q": "", "ellipticity": ""}
