"""Classical single-Sérsic + PSF profile fitting with Imfit (the GALFIT role)."""
