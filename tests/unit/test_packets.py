"""SafePacket: whatever a client sends decodes to a packet the server can handle."""

import pytest
from socketio import packet

from pulse.server.push.packets import MALFORMED, SafePacket


@pytest.mark.parametrize("encoded, ack_id", [
    ("2[", None),                      # not JSON
    ("{", None),                       # not a packet type
    ("9", None),                       # no such type
    ("4{}", None),                     # CONNECT_ERROR comes only from servers
    ("2", None),                       # an event without data
    ("2[]", None),                     # an event without a name
    ("2{}", None),                     # an event that is not a list
    ("2[1]", None),                    # a name that is not text
    ("27[[\"subscribe\"]]", 7),        # nor a list
    ('25["disconnect"]', 5),           # would run the disconnect handler on a live connection
    ('23["connect", {}]', 3),
    (f'21["{MALFORMED}", "forged"]', 1),
    ('51-["subscribe",{"_placeholder":true,"num":0}]', None),  # binary payloads: refused
    ('51-8["subscribe",{"_placeholder":true,"num":0}]', 8),
    ("34{}", 4),                       # an acknowledgement must carry a list
    ("21" + "[" * 100_000, 1),         # nested past the recursion limit
    (b"\x00\x01binary", None),         # a binary frame with no binary event before it
    ("", None),
])
def test_malformed_input_becomes_a_refusal_that_keeps_the_ack_id(encoded, ack_id):
    pkt = SafePacket(encoded_packet=encoded)
    assert pkt.packet_type == packet.EVENT
    assert pkt.data[0] == MALFORMED and isinstance(pkt.data[1], str) and pkt.data[1]
    assert pkt.id == ack_id


@pytest.mark.parametrize("encoded, packet_type, data", [
    ('0{"token":"t"}', packet.CONNECT, {"token": "t"}),
    ("0", packet.CONNECT, None),
    ("1", packet.DISCONNECT, None),
    ('212["subscribe",{"dashboard":true}]', packet.EVENT, ["subscribe", {"dashboard": True}]),
    ('2/other,3["x"]', packet.EVENT, ["x"]),
    ("31[]", packet.ACK, []),
])
def test_well_formed_packets_decode_as_usual(encoded, packet_type, data):
    pkt = SafePacket(encoded_packet=encoded)
    assert (pkt.packet_type, pkt.data) == (packet_type, data)


def test_outgoing_packets_encode_as_usual():
    assert SafePacket(packet.ACK, data=[{"ok": True}], id=4).encode() == '34[{"ok":true}]'
    assert SafePacket(packet.EVENT, data=["task", {"id": "a"}]).encode() == '2["task",{"id":"a"}]'
