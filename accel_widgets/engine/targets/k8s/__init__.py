"""Kubernetes: the API connection and rollouts, the Kubernetes and KServe targets."""
