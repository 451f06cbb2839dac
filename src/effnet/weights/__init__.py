"""Weights: the registry of entries, converters from other ecosystems, and loading."""
