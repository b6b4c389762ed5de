"""The Redis record: the only owner of key names, the status vocabulary and the Lua scripts."""
