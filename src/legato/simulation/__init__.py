"""CANDELS F160W-like single-Sérsic galaxy simulation with GalSim."""
