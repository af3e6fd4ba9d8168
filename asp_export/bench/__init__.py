"""Latency benchmarking of exported models on their real runtimes."""
