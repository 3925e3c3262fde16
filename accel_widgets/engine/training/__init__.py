"""Training: your own classes on a catalog featurizer, from a folder of photos."""
