"""The composition root: builds stages, broker, market-data feed, state and bus from a SessionConfig."""
