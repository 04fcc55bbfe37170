"""sbc.resolve: trunk host names resolved once at start (system resolver, no network)."""

from __future__ import annotations

import asyncio

from sbc.config import parse_config
from sbc.resolve import resolve_trunks

CONFIG = """\
interfaces:
  external: {listen: [udp:127.0.0.2:5080], media_address: 127.0.0.2}
trunks:
  - {name: by-name, interface: external, proxy: "sip:localhost:5090"}
  - {name: by-address, interface: external, proxy: "sip:127.0.0.20:5090"}
"""


def test_names_resolve_to_addresses_ipv4_first_and_literals_are_left_alone() -> None:
    found = asyncio.run(resolve_trunks(parse_config(CONFIG, "t.yaml")))
    assert "by-address" not in found
    addresses = found["by-name"]
    assert "127.0.0.1" in addresses
    assert addresses == sorted(addresses, key=lambda a: ":" in a)
