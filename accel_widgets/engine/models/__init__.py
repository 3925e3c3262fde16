"""Models: the catalog, building its TensorFlow networks (SSD included), registering your
own, the sample.
"""
