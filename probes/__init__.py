"""Probe scripts run inside each cell's environment (shipped as the package `matrix.probes`)."""
