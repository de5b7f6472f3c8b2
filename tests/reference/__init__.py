"""Slow, independent implementations the tests compare the toolkit against."""
