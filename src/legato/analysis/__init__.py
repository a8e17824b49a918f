"""Measurements on the pixels of one stamp: fluxes, radii and moments, noise texture, photutils segmentation."""
