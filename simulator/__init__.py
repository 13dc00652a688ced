"""Transaction simulator: synthetic shop orders and fraud ground truth for Kafka."""
