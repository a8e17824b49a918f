"""Reading galaxy catalogues (the van der Wel et al. 2014 GALFIT format) and selecting good fits."""
