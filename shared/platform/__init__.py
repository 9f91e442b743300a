"""The platform every service runs on: the service runtime, consuming and Kafka, settings, the state store, logs, health
and metrics, the bridge's own API keys, the outbox and the work queue."""
