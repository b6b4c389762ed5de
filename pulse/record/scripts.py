"""The registry's Lua scripts, read from this package (every script Pulse runs lives here)."""

from importlib import resources


def script(name: str) -> str:
    """The text of ``lua/<name>``."""
    return resources.files(__package__).joinpath("lua", name).read_text()
