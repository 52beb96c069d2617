"""The reference configuration that ships with the package, and where relative paths lead.

``ctp_node/config/example.yaml`` is ``config/ctp-node.yaml`` (a link in the repository, a copy
in the wheel): every key with its default and a comment. Its ``storage.root`` and SQLite file
are relative (``var/ctp-node``), which suits a checkout: relative paths resolve against the
configuration file's folder. A configuration installed elsewhere (``/etc/ctp-node/``) wants
absolute paths: ``ctp-node config example --root /var/lib/ctp-node`` writes them, and
``config check`` warns about relative ones outside a checkout.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import yaml

from ctp_node.config.problems import ConfigProblem
from ctp_node.config.schema import Config

#: The reference file inside the package.
REFERENCE_RESOURCE = "example.yaml"

_ROOT_LINE = re.compile(r"^(  root: )var/ctp-node(\s)", re.MULTILINE)
_SQLITE_LINE = re.compile(r"^(  url: sqlite:///)var/ctp-node/(ctp-node\.db\s)", re.MULTILINE)


def reference_config_text(root: Path | None = None) -> str:
    """The reference configuration's text; with ``root`` (an absolute folder), its
    ``storage.root`` is ``root`` and its SQLite database ``root/ctp-node.db``.

    Raises
    ------
    ValueError : ``root`` is not absolute.
    """
    text = files("ctp_node.config").joinpath(REFERENCE_RESOURCE).read_text(encoding="utf-8")
    if root is None:
        return text
    if not root.is_absolute():
        raise ValueError(f"--root must be an absolute folder, e.g. /var/lib/ctp-node; got {root}")
    text, roots = _ROOT_LINE.subn(lambda m: f"{m[1]}{root}{m[2]}", text)
    text, urls = _SQLITE_LINE.subn(lambda m: f"{m[1]}/{str(root).lstrip('/')}/{m[2]}", text)
    if (roots, urls) != (1, 1):  # the reference changed: fail loudly rather than half-apply
        raise RuntimeError("the reference configuration no longer has storage.root/database.url")
    return text


def relative_path_warnings(config: Config) -> list[ConfigProblem]:
    """A warning for each relative ``storage.root`` or SQLite file in a configuration that is
    not inside a checkout of ctp-node (no ``pyproject.toml`` in its folder or above): copied
    to ``/etc/ctp-node.yaml``, ``var/ctp-node`` would mean ``/etc/var/ctp-node``."""
    source = config.source_path
    if source is None or _in_checkout(source.parent):
        return []
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}  # as written, not resolved
    defaults = Config()
    given = {
        "storage.root": str((raw.get("storage") or {}).get("root", defaults.storage.root)),
        "database.url": str((raw.get("database") or {}).get("url", defaults.database.url)),
    }
    resolved = {"storage.root": str(config.storage.root), "database.url": config.database.url}
    return [
        ConfigProblem(
            key_path,
            f"{given[key_path]!r} is relative to this file's folder and means "
            f"{resolved[key_path]!r}; give an absolute path (e.g. under /var/lib/ctp-node)",
        )
        for key_path in given
        if given[key_path] != resolved[key_path]
    ]


def _in_checkout(folder: Path) -> bool:
    return any((parent / "pyproject.toml").is_file() for parent in (folder, *folder.parents))
