"""The one exception the config package raises."""

from __future__ import annotations


class ConfigError(Exception):
    """The node's configuration is invalid or cannot be read.

    ``problems`` holds one line per problem, each naming the key with its section and where the
    value came from, e.g. ``limits.send_rate: must be > 0 (from PARLEY_LIMITS__SEND_RATE)``.
    """

    def __init__(self, problems: str | list[str] | tuple[str, ...]) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))
