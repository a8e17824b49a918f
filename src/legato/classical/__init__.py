"""The classical fitter (the GALFIT role): single Sérsic + PSF fits with Imfit, their starts and the realistic labels."""
