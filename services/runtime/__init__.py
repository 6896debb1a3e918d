"""The Kafka runtime: the Kafka bus, the replay lockstep and the stage process runner."""
