"""Files on disk: atomic writes (a kill never leaves half a file) and loads that cannot run code and name
the file when it is damaged."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch


class DamagedFileError(ValueError):
    """A saved file (checkpoint, pruned model) cannot be read; the message names it."""


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a fresh temporary file next to `path` (a unique name, so concurrent writers such as
    parallel shards never share one), flush it to disk, then rename it over `path` (os.replace is atomic on
    POSIX and Windows): readers see the old file or the new one, never a part. A failed write leaves `path` as
    it was and removes the temporary file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see write_atomic)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj) to `path` atomically (see write_atomic)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_weights(path: str | os.PathLike, map_location: Any = None) -> Any:
    """torch.load(path, weights_only=True): tensors, dicts, lists and numbers only, so the file cannot run
    code. A truncated or damaged file raises DamagedFileError naming it. Load to the CPU (map_location "cpu")
    and move afterwards, so that a device error is not taken for a damaged file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DamagedFileError(f"{path}: cannot be read as a weights-only torch file ({reason}); it is truncated, "
                               "damaged or holds code objects. Delete it (a cached baseline is then retrained) "
                               "or load it again from its source") from None
