"""Integration tests: the real sbc process or TransportLayer on loopback, with SIPp."""
