"""What is wrong with a configuration: every problem with its key path, raised at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Problems and the error that carries them


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    Attributes
    ----------
    key_path : dotted path of the offending key, list items by index
        (``destinations.0.port``); ``(file)`` for the file as a whole.
    message : what is wrong, in a sentence a user can act on.
    """

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[ConfigProblem], path: Path | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "configuration"
        count = len(self.problems)
        header = f"{where}: {count} problem{'s' if count != 1 else ''} in the configuration"
        return "\n".join([header, *(f"  {problem}" for problem in self.problems)])
