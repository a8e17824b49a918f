"""Real survey data into stamp sets: GALFIT blocks and mosaics cut, measured (noise, neighbours) and labelled."""
