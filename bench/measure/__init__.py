"""Measurement: `sslbench bench` against the naive pipeline, the CPU roofline, and the
one-call GPU check."""
