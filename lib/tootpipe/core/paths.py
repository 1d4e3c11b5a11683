"""Where the project keeps its files, named once.

- :func:`project_root`: the folder holding pyproject.toml (found from notebooks/, tests/ and the root alike).
- :func:`install_dir`: what `make install` writes once and every run shares: the JVM jars, the Spark driver's class
  archive, the library zip for executors (``.tootpipe/`` in the project).
- :func:`state_dir`: what runs change: the embedded services' data, their state file, logs, the record of
  published sources (``$TOOTPIPE_STATE_DIR`` when set, else ``.tootpipe/`` in the project; created 0700). The test
  suite points it at a temporary folder, so it never touches the user's broker or database, while the install it
  shares stays where it is.
- :func:`write_atomic`: how a small file that runs depend on (passwords, the state file, a checkpoint's stamp) is
  written: whole or not at all, on disk before it is named.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "install_dir", "state_dir", "write_atomic", "STATE_FOLDER"]

STATE_FOLDER = ".tootpipe"  # the one spelling of the project's own folder


def project_root() -> Path:
    """The folder holding pyproject.toml (works from notebooks/, tests/ and the root)."""
    env = os.environ.get("TOOTPIPE_HOME")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for p in (start, *start.parents):
            if (p / "pyproject.toml").exists() and (p / "lib" / "tootpipe").is_dir():
                return p
    return Path.cwd()


def install_dir() -> Path:
    """The install's folder (jars, class archive, library zip): ``.tootpipe/`` in the project, whatever the state."""
    return project_root() / STATE_FOLDER


def state_dir() -> Path:
    """Where the embedded services keep their data and the state file: ``$TOOTPIPE_STATE_DIR`` when set, else
    ``.tootpipe/`` in the project. Created 0700."""
    env = os.environ.get("TOOTPIPE_STATE_DIR")
    path = Path(env).resolve() if env else project_root() / STATE_FOLDER
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
    return path


def write_atomic(path: Path, text: str, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write `text` to a temporary file beside `path` (created `mode`), fsync it, rename it over `path` and fsync
    the folder: a crash leaves the old file or the new one, never a truncated one. `exclusive`: FileExistsError
    when `path` already exists (two processes making the same file: the first one's stays)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails when path exists: the file another process made first stays
            tmp.unlink()
        else:
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
