"""Non-parametric measurements on stamps (fluxes, radii, moments)."""
