"""alerting service."""
