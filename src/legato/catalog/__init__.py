"""Reading galaxy catalogues (van der Wel GALFIT format)."""
