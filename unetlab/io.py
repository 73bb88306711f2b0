"""Writes that are all or nothing: a reader sees the old file or folder or the new one, never half of one.

Failures of the file system (a full disk, a read-only folder) come out as one ``OSError`` that names what could
not be written and why, with the original ``errno`` (see :func:`write_error`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path`` in one step.

    Even if the process dies mid-write, ``path`` keeps its previous content; on any error (KeyboardInterrupt
    included) the temporary file is removed. Missing parent folders are created. Returns ``Path(path)``.

    Raises:
        OSError: the file system refused (full disk, no permission), from :func:`write_error`: "could not write
            PATH: No space left on device; its previous content, if any, is unchanged".
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # same folder: os.replace stays atomic
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as file:  # unlike tempfile.mkstemp, keeps the usual permissions (umask)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, f"could not write {path}", "its previous content, if any, is unchanged") from err
        raise
    return path


def check_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and write and remove a small file in it, so that a command finds an output
    location it cannot use before it starts work, not after an epoch of training. Returns ``folder``.

    Raises:
        OSError: from :func:`write_error`: "cannot write to FOLDER: <reason>; nothing was started".
    """
    probe = folder / f".unetlab-write-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.open("xb").close()
        probe.unlink()
    except OSError as err:
        raise write_error(err, f"cannot write to {folder}", "nothing was started") from err
    return folder


def new_folder_beside(path: Path, tag: str) -> Path:
    """A new empty folder ``.<name>.<tag>-<random>`` beside ``path``, to build a folder in before
    :func:`replace_folder` renames it into place (the same file system, so the rename is one step).

    Its permissions are those of ``path`` when that is an existing folder, else what a plain ``mkdir`` gives (the
    umask), never ``tempfile.mkdtemp``'s 0700. Missing parent folders are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    if path.is_dir():
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    return tmp


def replace_folder(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path`` by renames; an existing ``path`` is replaced whole."""
    if not path.exists():
        tmp.rename(path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old)


def write_error(err: OSError, what: str, outcome: str) -> OSError:
    """``err`` told plainly: "<what>: <reason>; <outcome>", of the same class and with the same ``errno`` (its
    text is the message alone, without "[Errno 28]")."""
    new = type(err)(f"{what}: {err.strerror or err}; {outcome}")
    new.errno = err.errno
    return new


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` as strict JSON (:func:`json_text`), atomically; returns the path."""
    return atomic_write(path, lambda f: f.write(json_text(payload).encode()))


def json_text(payload: dict) -> str:
    """``payload`` as strict JSON (never a bare NaN, which JSON does not have): numpy values become plain ones, and
    a NaN or infinite score becomes null, its place and value listed under ``"undefined_values"``, e.g.
    ``{"test.mean_dice": "nan"}`` (a class Dice with no pixel of any defect class to score)."""
    undefined: dict[str, str] = {}
    data = _json_ready(payload, "", undefined)
    if undefined:
        data["undefined_values"] = undefined
    return json.dumps(data, indent=2, allow_nan=False)


def _json_ready(value, where: str, undefined: dict[str, str]):
    if isinstance(value, dict):
        return {k: _json_ready(v, f"{where}.{k}" if where else str(k), undefined) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v, f"{where}[{i}]", undefined) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        undefined[where] = str(value)
        return None
    return value
