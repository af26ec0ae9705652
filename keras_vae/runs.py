"""The run directory: its file names, how it is created, reopened and read back.

    runs/fashion_mnist-20261126-191500/
        config.json      every flag of the run (`--resume` reads it back)
        model.keras      the trained model, written once training has finished
        metrics.json     test metrics, evaluation, versions; written last
        history.csv      per-epoch metrics
        backup/          BackupAndRestore: weights, optimizer state, epoch
        logs/            TensorBoard
        report.html, *.png, saved_model/, tflite/

Every file is written through `atomic_path`/`atomic_write`: a temporary file
beside the target, renamed over it only when complete, so a killed process
never leaves a half-written file under a real name.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import platform
import re
import sys

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_probability as tfp

import keras_vae.hvae  # noqa: F401  (registers the VAE and HVAE for load_model)
import keras_vae.optimizers  # noqa: F401  (registers AdamNormGrad for load_model)
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError
from keras_vae.files import atomic_path, atomic_write, read_json, write_json  # noqa: F401

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
REPORT_FILE = "report.html"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
LOCK_FILE = ".lock"
# One line per command that opened the run (start, resumes): UTC time, tab, argv.
COMMANDS_FILE = "commands.txt"
# What keras.callbacks.BackupAndRestore writes, and our record of it, written last.
BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")
BACKUP_MANIFEST = "manifest.json"
# Early stopping's state (counter, best value and epoch; the best weights),
# part of a backup where the run stops early: a resumed run goes on counting
# and still restores the best weights seen before the interruption.
EARLY_STOPPING_FILES = ("early_stopping.json", "early_stopping_best.npz")
# A multi-worker run's backup: one folder per worker under backup/ (a shared
# one breaks on an h5 lock).
WORKER_BACKUP_DIR = "worker-{}"


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "tensorflow_datasets": tfds.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def default_output_dir(config: TrainConfig) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.dataset}-{stamp}")


def prepare_run_dir(config: TrainConfig) -> str:
    """Creates the run directory, or reopens it to resume, and takes its lock.

    An existing directory is reopened with `--resume`, or when it holds an
    unfinished run with exactly this config (the same command started again
    after a crash); anything else is refused, never overwritten. A directory
    another process is writing is refused (`lock_run_dir`) before anything
    is written to it.
    """
    out = config.output_dir
    config_path = os.path.join(out, CONFIG_FILE)
    if config.resume:
        if not os.path.isfile(config_path):
            raise UsageError(f"Cannot resume: {out} holds no {CONFIG_FILE}.")
        lock_run_dir(out)
        return out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output-dir {out} is a file; pass a directory path.")
    if os.path.exists(out) and set(os.listdir(out)) - {LOCK_FILE}:
        if is_unfinished_run_of(out, config):
            lock_run_dir(out)
            print(f"Resuming the unfinished run in {out} from its last backup.")
            return out
        raise UsageError(
            f"Run directory {out} already exists and is not empty; runs are never "
            "overwritten. Pass a new `--output-dir`, or `--resume` to continue it."
        )
    os.makedirs(out, exist_ok=True)
    lock_run_dir(out)
    write_json(config_path, dataclasses.asdict(config))
    return out


def early_stopping_state(backup_dir: str) -> dict | None:
    """The backup's early-stopping state (`wait`, `best`, `best_epoch`), or None."""
    path = os.path.join(backup_dir, EARLY_STOPPING_FILES[0])
    return read_json(path) if os.path.isfile(path) else None


def finished_at(run_dir: str, epochs: int) -> bool:
    """Whether the run's metrics.json was written after `epochs` epochs (a run
    whose training ended but whose artifacts were not written is unfinished)."""
    path = os.path.join(run_dir, METRICS_FILE)
    return os.path.isfile(path) and read_json(path).get("epochs") == epochs


def truncate_history(run_dir: str, epochs: int) -> int:
    """Keeps the first `epochs` epochs of the run's history.csv; returns the rows dropped.

    CSVLogger writes an epoch's row before the backup records that epoch, so a
    kill between the two leaves a row that the resumed run writes again.
    """
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return 0
    header, rows = lines[0], lines[1:]

    def epoch(row: str) -> int:
        first = row.split(",", 1)[0]
        return int(first) if first.isdigit() else epochs  # a damaged row goes too

    kept = [row for row in rows if row.strip() and epoch(row) < epochs]
    if len(kept) == len(rows):
        return 0
    with atomic_write(path) as f:
        f.write(header + "".join(kept))
    return len(rows) - len(kept)


def record_command(run_dir: str) -> None:
    """Appends this process's command line to the run's `commands.txt` (one
    short line per append, so an interrupted write cannot damage earlier ones)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(run_dir, COMMANDS_FILE), "a") as f:
        f.write(f"{stamp}\t{' '.join(sys.argv)}\n")


def read_commands(run_dir: str) -> list[str]:
    """The commands that opened the run, oldest first, as "TIME<TAB>COMMAND"."""
    path = os.path.join(run_dir, COMMANDS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def is_unfinished_run_of(out: str, config: TrainConfig) -> bool:
    """`out` holds a run of exactly `config` that has not written its metrics."""
    config_path = os.path.join(out, CONFIG_FILE)
    if not os.path.isfile(config_path) or os.path.exists(os.path.join(out, METRICS_FILE)):
        return False
    try:  # read as flags: a run saved before a flag existed has that flag's default
        saved = TrainConfig.from_saved(read_json(config_path), config_path)
    except (UsageError, ValueError):
        return False
    return json.loads(saved.to_json()) == json.loads(config.to_json())


def backup_epochs(run_dir: str) -> int | None:
    """Epochs completed in the run's backup (the first worker's in a
    multi-worker run), or None where it has no backup."""
    for backup_dir in (BACKUP_DIR, os.path.join(BACKUP_DIR, WORKER_BACKUP_DIR.format(0))):
        path = os.path.join(run_dir, backup_dir, BACKUP_FILES[1])
        if os.path.isfile(path):
            return int(read_json(path).get("epoch", 0))
    return None


def _run_model_file(run_dir: str) -> str:
    """`RUN/model.keras`, or a `UsageError` if the run has not finished."""
    model_file = os.path.join(run_dir, MODEL_FILE)
    if os.path.isfile(model_file):
        return model_file
    epochs = backup_epochs(run_dir)
    if epochs is not None:
        raise UsageError(
            f"{run_dir} is an unfinished train.py run ({epochs} epoch(s) in its backup, "
            f"no {MODEL_FILE} yet). Finish it with "
            f"`python train.py --resume --output-dir {run_dir}`."
        )
    raise UsageError(
        f"{run_dir} holds no {MODEL_FILE}: is it a finished train.py run directory? "
        "Pass the run directory to --model."
    )


def resolve_model_path(path: str) -> tuple[str, str | None]:
    """(`.keras` file, run directory or None) for a run directory or a file."""
    if os.path.isdir(path):
        return _run_model_file(path), path
    if path.endswith(".keras") and os.path.isfile(path):
        return path, None
    raise UsageError(f"--model {path}: no such run directory or .keras file.")


def load_run(run_dir: str) -> tuple[TrainConfig, keras.Model]:
    """The config and the model of a finished run directory.

    Raises:
        UsageError: `run_dir` holds no model file, or a bad config.json.
    """
    model_file = _run_model_file(run_dir)
    return load_config(run_dir), load_model_file(model_file)


def load_model_file(path: str) -> keras.Model:
    """`keras.models.load_model` in safe mode, with a one-line refusal.

    A `.keras` file that holds code (a Lambda layer, a function) or names a
    class Keras does not know (`os.system`, `builtins.exec`) is blocked by
    Keras's safe_mode; this turns its long message into one line that says
    the file was not loaded. safe_mode is never turned off.

    Raises:
        UsageError: the file is damaged, holds code or an unknown class.
    """
    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, TypeError) as e:
        text = str(e)
        if "safe_mode" in text or "arbitrary code" in text:
            why = "it holds code (a Lambda layer or a Python function)"
        elif "Could not locate" in text or "Unknown" in text:
            name = re.search(r"(?:class|function|object) '?([\w.]+)'?", text)
            known = name.group(1) if name else "unknown"
            why = f"it names a class or function Keras does not know ({known})"
        elif "zip" in text or "File not found" in text or "not a" in text:
            why = "it is not a readable .keras archive (damaged or truncated)"
        else:
            raise
        raise UsageError(
            f"{path} was not loaded: {why}. keras-vae loads .keras files in Keras's safe "
            "mode only; use a model.keras written by `keras-vae train`."
        ) from None


def load_config(run_dir: str) -> TrainConfig:
    """The run's config.json, checked like flags."""
    return TrainConfig.from_json_file(os.path.join(run_dir, CONFIG_FILE))


def update_metrics(run_dir: str, updates: dict) -> dict:
    """Merges `updates` into the run's metrics.json (written atomically)."""
    path = os.path.join(run_dir, METRICS_FILE)
    metrics = read_json(path) if os.path.isfile(path) else {}
    metrics.update(updates)
    write_json(path, metrics)
    return metrics


# --- one writer per run directory ---------------------------------------------

_HELD_LOCKS: dict = {}  # realpath -> open lock file, kept for the process's life


def lock_run_dir(run_dir: str) -> None:
    """Takes the run directory's exclusive lock for this process, or refuses.

    `fcntl.flock` on `RUN/.lock`: the OS releases it when the process dies,
    however it dies, so a killed run never leaves a stale lock. Taking it
    again in the same process is a no-op (training, then its export).

    Raises:
        UsageError: another process holds it; the message names its PID.
    """
    path = os.path.realpath(os.path.join(run_dir, LOCK_FILE))
    if path in _HELD_LOCKS:
        return
    f = open(path, "a+")  # noqa: SIM115  (held open until the process ends)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UsageError(
            f"Run directory {run_dir} is in use by another process (PID {holder}). Wait for "
            "it to finish, or stop it, then run the command again."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _HELD_LOCKS[path] = f


# --- checked backups ------------------------------------------------------------


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_backup_manifest(backup_dir: str) -> None:
    """Records the size and sha256 of each backup file (after they are complete)."""
    files = {}
    for name in (*BACKUP_FILES, *EARLY_STOPPING_FILES):
        path = os.path.join(backup_dir, name)
        if name in BACKUP_FILES or os.path.exists(path):
            files[name] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
    write_json(os.path.join(backup_dir, BACKUP_MANIFEST), {"files": files})


def check_backup(backup_dir: str) -> int:
    """The epochs a backup holds: 0 for none, else checked against its manifest.

    Raises:
        UsageError: a backup file is missing, truncated or altered, or the
            manifest is (the backup was not finished): the message names the
            file and the way out.
    """
    present = [
        n for n in (*BACKUP_FILES, BACKUP_MANIFEST) if os.path.exists(os.path.join(backup_dir, n))
    ]
    if not present:
        return 0
    way_out = (
        f"Resuming from it would not restore what was trained. Start again in a new "
        f"`--output-dir`, or move {backup_dir} aside (e.g. `mv {backup_dir} "
        f"{backup_dir}.damaged`) to restart this run from scratch."
    )
    manifest_path = os.path.join(backup_dir, BACKUP_MANIFEST)
    if not os.path.exists(manifest_path):
        raise UsageError(
            f"The backup in {backup_dir} has no {BACKUP_MANIFEST}: it was not finished. {way_out}"
        )
    try:
        files = read_json(manifest_path)["files"]
    except (UsageError, KeyError, TypeError):
        raise UsageError(f"{manifest_path} is damaged. {way_out}") from None
    recorded = [n for n in EARLY_STOPPING_FILES if n in files]  # in the backup if recorded
    for name in (*BACKUP_FILES, *recorded):
        path = os.path.join(backup_dir, name)
        expected = files.get(name, {})
        if not os.path.isfile(path):
            raise UsageError(f"Backup file {path} is missing. {way_out}")
        if os.path.getsize(path) != expected.get("bytes") or _sha256(path) != expected.get(
            "sha256"
        ):
            raise UsageError(
                f"Backup file {path} does not match {BACKUP_MANIFEST} (truncated or "
                f"altered). {way_out}"
            )
    return int(read_json(os.path.join(backup_dir, "training_metadata.json"))["epoch"])
