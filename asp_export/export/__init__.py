"""Exporters: one module per format, driven by the FORMATS table."""
