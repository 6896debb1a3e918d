"""Operations entry points that chain the stages' tools: the nightly job (sync, calibrate, publish)."""
