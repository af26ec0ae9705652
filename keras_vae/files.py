"""Files and folders written whole or not at all, and strict JSON (no TensorFlow here).

The run directory (`runs.py`) and presets (`presets.py`) write through
these: a temporary file beside the target, renamed over it only when
complete, so a killed process never leaves a half-written file under a
real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from keras_vae.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path` (same suffix); renames it over
    `path` if the block succeeds, removes it if it fails."""
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=os.path.splitext(name)[1], dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide exports from a server's user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """`open(path, mode)`, but the file appears under `path` only when complete."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def is_new_or_empty_dir(path: str) -> bool:
    """Whether `atomic_dir(path)` may write there: nothing is replaced or mixed into."""
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yields a staging folder beside `path`; it becomes `path` (absent or an
    empty folder) only if the block succeeds, and is removed if it fails."""
    path = os.path.abspath(path)
    name = os.path.basename(path)
    prefix = f".tmp-{name}-"
    remove_stale_staging(os.path.dirname(path), prefix)
    staging = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=os.path.dirname(path))
    try:
        yield staging
        if os.path.isdir(path):  # empty, checked by the caller: replaced whole
            os.rmdir(path)
        os.rename(staging, path)
        os.chmod(path, 0o755)  # mkdtemp's 0700 would hide it from other users
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_staging(directory: str, prefix: str) -> list[str]:
    """Removes the staging folders `PREFIX<pid>-*` in `directory` whose process
    is gone (killed before it could clean up); returns their names.

    A staging folder of a live process is left alone: it may still finish.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in os.listdir(directory):
        if not entry.startswith(prefix):
            continue
        owner = entry[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and _alive(int(owner)) and int(owner) != os.getpid():
            continue
        shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
        removed.append(entry)
    return removed


def write_json(path: str, obj) -> None:
    """Strict JSON (no NaN or Infinity, which `jq` and JavaScript reject), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    with atomic_write(path) as f:
        f.write(text)


def read_json(path: str):
    """The JSON in `path`; a corrupt file is a `UsageError` that names it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); restore or remove it.") from None
