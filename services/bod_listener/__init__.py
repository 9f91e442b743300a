"""bod-listener: Receives ION BODs and turns them into normalized M3 change events."""
