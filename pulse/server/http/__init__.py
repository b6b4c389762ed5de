"""HTTP: the REST API, commands, pages, auth, the embed route and security headers."""
