"""Nightkeeper's Dagster assets and asset checks: thin wrappers over nightkeeper/."""
