"""Slow, independent implementations that the fast tools are checked against (hooks only)."""
