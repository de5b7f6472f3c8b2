"""Rules every stage shares: config checks, atomic file writes, statistics, provenance."""
