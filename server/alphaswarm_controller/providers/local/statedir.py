"""The state directory is private to the server: directories 0700, files 0600.

Modes are set explicitly (never left to the umask) and checked again at every
open, so a directory created by an older version, restored from a backup or
loosened by hand is repaired before anything is read from it. Nothing in it is
followed through a symlink: a link planted there could make the server write
where its user may write but a replica may not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


class InsecureStateDir(OSError):
    """The state directory cannot be made private (wrong owner, a symlink)."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700 directories; its parent is private too.

    The parent (``ALPHASWARM_CP_STATE_DIR`` itself) is made 0700 when it is ours;
    one that belongs to another user must at least not let anyone else replace
    ``path`` in it.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
    _check_parent(path.parent)
    _check_dir(path)


def _check_parent(path: Path) -> None:
    info = os.stat(path)
    if info.st_uid == os.geteuid():
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(path, DIR_MODE)
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise InsecureStateDir(f"{path} belongs to uid {info.st_uid} and others may write to it")


def _check_dir(path: Path) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise InsecureStateDir(f"{path} is not a directory (a symlink or a file)")
    if info.st_uid != os.geteuid():
        raise InsecureStateDir(f"{path} belongs to uid {info.st_uid}, not to the server's uid")
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def secure_tree(root: Path) -> list[str]:
    """Make ``root`` and everything under it private; what had to be repaired.

    Anything that is neither a file nor a directory, or that belongs to another
    user, cannot be trusted or repaired: it is an error, not a warning.
    """
    repaired: list[str] = []
    _check_dir(root)
    for current, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(current, name)
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            if kind not in (stat.S_IFDIR, stat.S_IFREG):
                raise InsecureStateDir(f"{path} is neither a file nor a directory")
            if info.st_uid != os.geteuid():
                raise InsecureStateDir(f"{path} belongs to uid {info.st_uid}")
            wanted = DIR_MODE if kind == stat.S_IFDIR else FILE_MODE
            if stat.S_IMODE(info.st_mode) != wanted:
                os.chmod(path, wanted)
                repaired.append(f"{path} {stat.S_IMODE(info.st_mode):04o}->{wanted:04o}")
    return repaired


def open_private(path: Path, flags: int) -> int:
    """Open (creating it 0600 if needed) a file in the state directory, never through a link."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away, or it existed looser
    except BaseException:
        os.close(fd)
        raise
    return fd


def touch_private(path: Path) -> None:
    os.close(open_private(path, os.O_RDWR))


def chmod_private(paths: list[Path]) -> None:
    """Files that someone else created for us (SQLite's -wal and -shm) get 0600 too."""
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
