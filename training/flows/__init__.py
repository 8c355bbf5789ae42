"""Normalizing flows used to generate synthetic negative patches (training only)."""
