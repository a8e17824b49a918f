"""Simulated CANDELS-like stamp sets with GalSim: single-Sérsic and realistic domains, PSFs, calibrated survey noise."""
