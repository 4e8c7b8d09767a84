"""Nightkeeper's Dagster jobs, schedules, sensors, resources and the Definitions object."""
