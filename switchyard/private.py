"""Files only the user who runs Switchyard may read: directories 0700, files 0600, generated secrets.

The data directory holds every prompt and answer (the database), the logs, the pidfiles and the secrets
Switchyard generates for itself (the embedded broker's password, Flower's password). On a shared host none
of it may be readable by another account, so everything Switchyard creates there goes through this module:

    private_dir(path)              mkdir (parents too) and chmod 0700
    private_file(path)             create if missing, chmod 0600; returns the path
    write_private(path, text)      write through a 0600 temporary file and rename: never half-written
    stored_secret(path)            the secret kept in ``path``; generated (secrets.token_urlsafe) on first use
    masked_url(url)                ``url`` with its password replaced by ``***``, for messages and logs

Children started by the launcher run with :data:`PRIVATE_UMASK`, so what they create (valkey's AOF, the
SQLite WAL, Celery beat's schedule) is private too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from switchyard.errors import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600
PRIVATE_UMASK = 0o077
SECRET_BYTES = 24  # token_urlsafe(24): 32 characters of [A-Za-z0-9_-], safe in a URL and in valkey.conf
SECRET_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,256}")
MASK = "***"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents, also 0700) and make it 0700; returns ``path``."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
    path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it is missing and make it 0600; returns ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.close(fd)
    path.chmod(FILE_MODE)
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` as a 0600 file, through a temporary file renamed over it."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)
    return path


def stored_secret(path: Path) -> str:
    """The secret kept in ``path``, made 0600; generated and stored on first use, then reused.

    Two processes asking at once agree: the file is created exclusively, and the loser reads the winner's.
    """
    private_dir(path.parent)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def _read_secret(path: Path) -> str:
    path.chmod(FILE_MODE)
    value = path.read_text(encoding="utf-8").strip()
    if not SECRET_SHAPE.fullmatch(value):
        raise ConfigError(
            f"{path} does not hold a usable secret (16 to 256 characters of letters, digits, '-' and '_'); "
            "delete it and Switchyard generates a new one at the next start"
        )
    return value


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:***@host:6399/0``); other text unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
