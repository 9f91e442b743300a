"""The library every M3 Bridge service uses: settings, contracts, Kafka wiring, state, observability."""

__version__ = "0.1.0"
