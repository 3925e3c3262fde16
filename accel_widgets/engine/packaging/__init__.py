"""Packaging: a container image of one converted model, its build context and the Docker engine."""
