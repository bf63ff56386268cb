"""Service package."""
