"""Pretrained presets: a model as plain data plus a weights file, the way
KerasHub ships them (no TensorFlow here; `VAE.from_preset` builds the model).

    keras_vae/presets/NAME/           (shipped inside the package)
        config.json        VAE.get_config(): the hyperparameters
        model.weights.h5   the weights: float32 as trained, or float16 (half
                           the size; `from_preset` loads them into float32)
        metadata.json      the command that trained it, the data (dataset,
                           class names, image shape, the run's config), the
                           epochs, the test figures, the versions, and
                           `check`: the IW bound on the first CHECK_IMAGES
                           test images with K = CHECK_SAMPLES
        gmm_sampler.npz    optional: the run's GMM sampler (`--sampler gmm`)
        curves.png         optional: the run's training and validation curves

`VAE.save_to_preset(dir)` writes the same layout and `VAE.from_preset(dir)`
reads any such folder; a bare NAME is looked up among the shipped presets.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from keras_vae import choices
from keras_vae.errors import UsageError
from keras_vae.files import atomic_dir, is_new_or_empty_dir, read_json, write_json

PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
GMM_FILE = "gmm_sampler.npz"  # samplers.GMM_FILE: the same name in a run
# Files a preset may carry over from its run, under the names the run gives them.
OPTIONAL_FILES = (GMM_FILE, "curves.png")
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
# The figure a preset's metadata records and its test re-measures.
CHECK_IMAGES = 500
CHECK_SAMPLES = 100
# float16 keeps 11 significant bits; its largest finite value is 65504.
WEIGHTS_DTYPES = choices.PRESET_WEIGHTS
FLOAT16_MAX = 65504.0


def _missing(directory: str) -> list[str]:
    return [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(directory, f))]


def available() -> list[str]:
    """The names of the presets shipped with the package."""
    if not os.path.isdir(PRESETS_DIR):
        return []
    return sorted(
        name
        for name in os.listdir(PRESETS_DIR)
        if os.path.isdir(os.path.join(PRESETS_DIR, name))
        and not _missing(os.path.join(PRESETS_DIR, name))
    )


def _describe_available() -> str:
    names = available()
    return ", ".join(names) if names else "none are installed"


def is_shipped_name(spec: str) -> bool:
    """Whether `spec` is a bare name (no path separator) of a shipped preset.

    The rule: a bare shipped name is always the preset, even where a folder of
    that name exists in the working directory; anything with a separator
    (`./fashion_mnist_conv`) or any other name is a path.
    """
    return os.sep not in spec and spec in available()


def naming_rule() -> str:
    """The rule of `--model` and `--preset`, for the refusals that need it."""
    return (
        f"A bare name is a shipped preset ({_describe_available()}); anything else is a "
        "path to a run directory, a .keras file or a preset folder."
    )


def is_preset(spec: str) -> bool:
    """Whether `spec` names a shipped preset or a preset folder."""
    return is_shipped_name(spec) or (os.path.isdir(spec) and not _missing(spec))


def shadow_note(spec: str) -> str | None:
    """A note when a bare shipped name also names a folder here, or None."""
    if is_shipped_name(spec) and os.path.exists(spec):
        return (
            f"Note: {spec} is the shipped preset; for the folder of that name here, pass ./{spec}."
        )
    return None


def resolve(preset: str) -> str:
    """A shipped preset's name or a preset folder -> the folder.

    Raises:
        UsageError: an unknown name (listing the shipped presets), or a folder
            that lacks a preset's files (naming them).
    """
    if is_shipped_name(preset):
        return os.path.join(PRESETS_DIR, preset)
    if os.path.isdir(preset):
        missing = _missing(preset)
        if missing:
            raise UsageError(
                f"{preset} is not a preset folder: it lacks {', '.join(missing)}. A preset "
                f"holds {', '.join(REQUIRED_FILES)} (VAE.save_to_preset writes them). "
                f"Shipped presets, by bare name: {_describe_available()}."
            )
        return os.path.abspath(preset)
    if preset in available():
        return os.path.join(PRESETS_DIR, preset)
    raise UsageError(
        f"Unknown preset {preset!r}. Shipped presets: {_describe_available()}; or pass a "
        "folder written by VAE.save_to_preset."
    )


def read(preset: str) -> tuple[dict, str, dict]:
    """(model config, weights file, metadata) of a preset name or folder."""
    directory = resolve(preset)
    config = read_json(os.path.join(directory, CONFIG_FILE))
    metadata = read_json(os.path.join(directory, METADATA_FILE))
    return config, os.path.join(directory, WEIGHTS_FILE), metadata


def gmm_file(preset: str) -> str | None:
    """The preset's GMM sampler file, or None if it ships without one."""
    path = os.path.join(resolve(preset), GMM_FILE)
    return path if os.path.isfile(path) else None


def _check_weights_dtype(weights_dtype: str) -> None:
    if weights_dtype not in WEIGHTS_DTYPES:
        raise UsageError(
            f"Invalid weights_dtype {weights_dtype!r}: expected one of {list(WEIGHTS_DTYPES)}."
        )


def rounded(weights: list, weights_dtype: str) -> list:
    """`weights` (numpy arrays) as a `weights_dtype` file stores them, in
    their own dtypes: what `from_preset` will load. float32 is unchanged.

    Raises:
        UsageError: a weight beyond float16's range.
    """
    import numpy as np

    _check_weights_dtype(weights_dtype)
    if weights_dtype == "float32":
        return list(weights)
    out = []
    for w in weights:
        w = np.asarray(w)
        if w.dtype == np.float32:
            largest = float(np.max(np.abs(w))) if w.size else 0.0
            if not largest <= FLOAT16_MAX:
                raise UsageError(
                    f"A weight of magnitude {largest:g} does not fit in float16 (at most "
                    f"{FLOAT16_MAX:g}); keep this preset's weights in float32."
                )
            w = w.astype(np.float16).astype(np.float32)
        out.append(w)
    return out


def _copy_weights_as(source: str, target: str, weights_dtype: str) -> None:
    """Copies a Keras weights file, storing its float32 arrays as `weights_dtype`."""
    import h5py
    import numpy as np

    def copy(group_in, group_out):
        group_out.attrs.update(dict(group_in.attrs))
        for key, item in group_in.items():
            if isinstance(item, h5py.Group):
                copy(item, group_out.create_group(key))
                continue
            data = item[()]
            if getattr(data, "dtype", None) == np.float32:
                data = np.asarray(data).astype(weights_dtype)
            group_out.create_dataset(key, data=data).attrs.update(dict(item.attrs))

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        copy(src, dst)


def _write_weights(save_weights, path: str, weights_dtype: str) -> None:
    """The weights file at `path`, written by HDF5 in a scratch folder, then copied.

    HDF5 never writes where the preset goes: when a write fails there (a full
    disk), h5py keeps the half-written file open and HDF5's own exit handler
    crashes the process (SIGSEGV) after the error. The scratch folder is in
    memory where Linux offers it (/dev/shm); the copy that may then fail is a
    plain file copy, an `OSError` like any other.
    """
    shm = "/dev/shm"
    scratch = tempfile.mkdtemp(
        prefix="keras_vae_weights_", dir=shm if os.access(shm, os.W_OK) else None
    )
    try:
        trained = os.path.join(scratch, "float32." + WEIGHTS_FILE)
        save_weights(trained)
        if weights_dtype != "float32":
            stored = os.path.join(scratch, WEIGHTS_FILE)
            _copy_weights_as(trained, stored, weights_dtype)
            trained = stored
        shutil.copyfile(trained, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write(
    preset_dir: str,
    config: dict,
    save_weights,
    metadata: dict,
    extra=(),
    weights_dtype: str = "float32",
):
    """Writes a preset folder whole or not at all (staged, then renamed).

    `save_weights(path)` writes the weights file, which is stored in
    `weights_dtype` (`WEIGHTS_DTYPES`); `extra` are files to copy in under
    their own names (`OPTIONAL_FILES`, e.g. a run's GMM sampler). An existing
    non-empty folder is refused.
    """
    _check_weights_dtype(weights_dtype)
    preset_dir = os.path.abspath(preset_dir)
    if not is_new_or_empty_dir(preset_dir):
        raise UsageError(f"{preset_dir} exists and is not empty; choose a new preset folder.")
    parent = os.path.dirname(preset_dir)
    if not os.path.isdir(parent):
        raise UsageError(f"{preset_dir}: the folder {parent} does not exist.")
    try:
        with atomic_dir(preset_dir) as staging:
            _write_files(staging, config, save_weights, metadata, extra, weights_dtype)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise OSError(
            e.errno,
            f"No space left on the device of {preset_dir}; nothing was written there. "
            "Free some space or choose a folder on another disk.",
        ) from None
    return preset_dir


def _write_files(staging, config, save_weights, metadata, extra, weights_dtype):
    """A preset's files into its staging folder; the metadata last."""
    write_json(os.path.join(staging, CONFIG_FILE), config)
    _write_weights(save_weights, os.path.join(staging, WEIGHTS_FILE), weights_dtype)
    for path in extra:
        shutil.copyfile(path, os.path.join(staging, os.path.basename(path)))
    write_json(os.path.join(staging, METADATA_FILE), metadata)
