"""Helpers for testing Nightkeeper and projects built on it: ``synthetic`` draws valid labeled rows for any data
contract. Nothing in the framework imports it."""
