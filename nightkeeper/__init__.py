"""Nightkeeper."""
