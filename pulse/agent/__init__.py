"""The library that runs inside the user's producers and workers: ``install``, progress,
structured failures, the event wire format and token minting. It never imports the server."""
