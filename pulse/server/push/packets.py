"""Socket.IO packets as Pulse decodes them: whatever a client sends becomes a packet the server
can handle, never an exception.

python-socketio raises on a packet it cannot decode (``42[``, ``4{``, an event ``[]``), and on
some that decode but that it does not expect (a CONNECT_ERROR, a binary event from a client
that never joined); each one logged a traceback. ``SafePacket`` turns all of them into an event
named ``MALFORMED`` that carries the reason, so that ``pulse.live`` answers it like any other
event: an error acknowledgement when the packet had an ack id, nothing at all otherwise.
"""

from typing import Any

from socketio import packet

MALFORMED = "pulse:malformed"
# Events python-socketio dispatches to the connection handlers; a client must not send them
# (a client's "disconnect" event would run the disconnect handler on a live connection).
RESERVED = frozenset({"connect", "connect_error", "disconnect"})
CLIENT_TYPES = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK})


class SafePacket(packet.Packet):
    """The default (JSON) Socket.IO packet, with a decoder that refuses instead of raising.

    Binary payloads are refused too: Pulse has no use for them, and each attachment arrives as
    a frame of its own that the server would otherwise hold on to until the rest came.
    """

    def __init__(self, *args: Any, encoded_packet: str | bytes | None = None, **kwargs: Any) -> None:
        super().__init__(*args, encoded_packet=encoded_packet, **kwargs)
        if encoded_packet is not None and len(encoded_packet) == 0:
            # The base class does not decode an empty packet: it would pass as an event of None.
            self._refuse("empty packet")

    def decode(self, encoded_packet: str | bytes) -> int:
        if isinstance(encoded_packet, bytes | bytearray):
            return self._refuse("binary payloads are not accepted")
        try:
            super().decode(encoded_packet)
        except Exception as exc:  # untrusted text: any way decoding fails is the client's error
            return self._refuse(f"not a Socket.IO packet ({type(exc).__name__})")
        if self.packet_type in (packet.BINARY_EVENT, packet.BINARY_ACK):
            return self._refuse("binary payloads are not accepted")
        problem = _problem(self.packet_type, self.data)
        return self._refuse(problem) if problem else 0

    def _refuse(self, reason: str) -> int:
        # The id (when it was read) stays, so the refusal can be acknowledged.
        self.packet_type, self.data = packet.EVENT, [MALFORMED, reason]
        return 0


def _problem(packet_type: Any, data: Any) -> str | None:
    """What is wrong with a decoded packet from a client, or None."""
    if packet_type not in CLIENT_TYPES:
        return f"unexpected packet type {str(packet_type)[:20]}"
    if packet_type == packet.ACK and not isinstance(data, list):
        return "an acknowledgement carries a list of arguments"
    if packet_type != packet.EVENT:
        return None
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        return 'an event is ["name", ...arguments]'
    if data[0] in RESERVED or data[0] == MALFORMED:
        return f"{data[0]!r} is reserved for the connection itself"
    return None
