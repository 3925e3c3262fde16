"""Clients: scoring a deployed service over gRPC or REST, benchmarks, timing, detection answers."""
