"""Push: Socket.IO rooms, socket handlers and the transport that guards them."""
