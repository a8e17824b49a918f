"""Files in and out: stamp sets and their fingerprints, every stamp input (cube, folder, mosaic, Parquet) and its checks, GALFIT blocks."""
