"""Reading and writing stamps and catalogues."""
