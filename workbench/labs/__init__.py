"""One module per lab: a param Study plus its compute functions."""
