"""Users' image folders and array files, prepared once into a TFDS dataset on disk.

A folder of images (or a `.npz`/`.npy` file) given as `--dataset PATH` is
decoded once, by `local_data`'s reader, into a TFDS dataset of TFRecord
shards (written here, each by one decoding process, with TFDS's own
metadata: `tfds.folder_dataset.write_metadata`), and every later command
streams it with tf.data (`data.load`) instead of decoding the folder again.

- **Where.** `--data-dir DIR/keras_vae_prepared/`, else `$KERAS_VAE_CACHE_DIR`,
  else `$XDG_CACHE_HOME/keras-vae/prepared` (`~/.cache/keras-vae/prepared`).
  One folder per source path and reading options (`--image-size`,
  `--channels`, `--test-fraction`, the reader's version).
- **When.** Folders of `STREAM_MIN_IMAGES` images or more, arrays of
  `STREAM_MIN_BYTES` or more, and anything `keras-vae prepare PATH` prepared.
  Smaller sources are read into memory at each command, as fast as opening
  a prepared dataset and with the same images, labels and splits.
- **Never stale.** The fingerprint is every image file's relative path, size
  and modification time (for an array file, its own). A source that changed
  is prepared again, and the command says what changed.
- **Atomic.** A prepare writes into a staging folder that becomes the
  prepared folder only when complete. One killed midway (Ctrl-C, SIGKILL, a
  full disk) leaves nothing a later command reads; the next one starts it
  again and says so. A lock makes concurrent commands (the workers of a
  multi-worker run) prepare once.

numpy, PIL and the standard library only at import: `train` checks a
prepared dataset is up to date before TensorFlow loads; writing one imports
TFDS (without TensorFlow) and google-crc32c.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
import types

import numpy as np

from keras_vae import files, local_data
from keras_vae.config import check_dataset_path
from keras_vae.errors import UsageError

# Bumped whenever the reader (`local_data`) changes what an image becomes:
# every prepared dataset of an older reader is then prepared again.
READER_VERSION = 1
# Below these, a source is read into memory at each command (0.5 ms an image).
STREAM_MIN_IMAGES = 5000
STREAM_MIN_BYTES = 64 << 20
CACHE_ENV = "KERAS_VAE_CACHE_DIR"
MANIFEST = "keras_vae_prepared.json"
LISTING = "listing.json"
TFDS_NAME = "keras_vae_prepared"
TFDS_VERSION = "1.0.0"
# Examples per TFRecord shard: enough shards to shuffle files and to share
# among workers, few enough that each read is a long sequential one.
SHARD_IMAGES = 2000
MAX_SHARDS = 1024
PROGRESS_EVERY = 64  # images a decoding process writes between progress reports
POOL_MIN_IMAGES = 500  # fewer decode faster here than processes start (0.5 s)


def cache_root(data_dir: str | None = None) -> str:
    """Where prepared datasets live (see the module docstring)."""
    if data_dir:
        return os.path.join(os.path.abspath(os.path.expanduser(data_dir)), "keras_vae_prepared")
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras-vae", "prepared")


class Options:
    """A source and the reading options that make one prepared dataset."""

    def __init__(self, path, image_size=None, channels=None, test_fraction=0.1, data_dir=None):
        check_dataset_path(path)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.image_size = int(image_size) if image_size else None
        self.channels = int(channels) if channels else None
        self.test_fraction = float(test_fraction)
        self.data_dir = data_dir

    def key(self) -> dict:
        return {
            "source": self.path,
            "image_size": self.image_size,
            "channels": self.channels,
            "test_fraction": self.test_fraction,
            "reader_version": READER_VERSION,
        }

    def _tuple(self):
        return tuple(self.key().values()) + (self.data_dir,)

    def __eq__(self, other):
        return isinstance(other, Options) and self._tuple() == other._tuple()

    def __hash__(self):
        return hash(self._tuple())

    @property
    def slot(self) -> str:
        """The prepared dataset's folder."""
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()
        name = os.path.basename(os.path.normpath(self.path)) or "dataset"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        return os.path.join(cache_root(self.data_dir), f"{safe}-{digest[:16]}")

    @property
    def tfds_dir(self) -> str:
        return os.path.join(self.slot, TFDS_NAME, TFDS_VERSION)


def listing(path: str) -> list:
    """`[relative path, size, mtime_ns]` of every image file a source reads, sorted."""
    if not os.path.isdir(path):
        stat = os.stat(path)
        return [[os.path.basename(path), stat.st_size, stat.st_mtime_ns]]
    rows, root = [], os.path.join(path, "")
    for folder, names in local_data._walk_once(path):
        prefix = os.path.join(folder, "")[len(root) :]  # os.walk's paths extend `path`
        for name in names:
            if name.lower().endswith(local_data.IMAGE_EXTENSIONS):
                stat = os.stat(folder + os.sep + name)
                rows.append([prefix + name, stat.st_size, stat.st_mtime_ns])
    return sorted(rows)


def fingerprint(rows: list) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def manifest(options: Options) -> dict | None:
    """The manifest of `options`' prepared dataset, or None where there is none."""
    path = os.path.join(options.slot, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        return files.read_json(path)
    except UsageError:
        return None


def wants_streaming(options: Options, rows: list) -> bool:
    """Whether `options`' source is read from a prepared dataset (else in memory)."""
    if os.path.isdir(options.slot):
        return True  # prepared before (by `keras-vae prepare` or a large size)
    if os.path.isdir(options.path):
        return len(rows) >= STREAM_MIN_IMAGES
    return rows[0][1] >= STREAM_MIN_BYTES


def _changes(old_rows: list, new_rows: list) -> str:
    old = {r[0]: tuple(r[1:]) for r in old_rows}
    new = {r[0]: tuple(r[1:]) for r in new_rows}
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    return f"{added} added, {changed} changed, {removed} removed"


def open_source(path, image_size=None, channels=None, test_fraction=0.1, data_dir=None):
    """Checks a `--dataset PATH` before TensorFlow loads: a source that streams
    is prepared now where it needs to be (its manifest is returned), and a
    small one is read into memory (cached for the run in this process; None
    is returned). Either way bad data fails here, naming the file."""
    options = Options(path, image_size, channels, test_fraction, data_dir)
    found = ensure(options)
    if found is None:
        local_data.load_local(path, image_size, channels, test_fraction)
    return found


def is_fresh(options: Options) -> bool:
    """Whether `options` has a prepared dataset and its source has not changed since."""
    found = manifest(options)
    return bool(found) and found.get("fingerprint") == fingerprint(listing(options.path))


def ensure(
    options: Options, processes: int | None = None, any_size: bool = False, again: bool = False
) -> dict | None:
    """The manifest of an up-to-date prepared dataset for `options`, preparing
    it where it is missing, stale or was interrupted; or None for a source
    read into memory (small and never prepared, unless `any_size`). `again`
    prepares it even if it is up to date (`keras-vae prepare --force`).

    A process lists a source at most once every `RECHECK_SECONDS` (a command
    loads its splits and pictures one by one, each through here, and listing
    200,000 files takes about a second); `forget()` drops what it knows.
    """
    plain = not (any_size or again)
    known = _CHECKED.get(options)
    if plain and known and time.monotonic() - known[1] < RECHECK_SECONDS:
        return known[0]
    found = _ensure(options, processes, any_size, again)
    if plain or found is not None:
        _CHECKED[options] = (found, time.monotonic())
    return found


RECHECK_SECONDS = 60
# Options -> (the manifest, or None for in memory; when it was found up to date).
_CHECKED: dict = {}


def forget() -> None:
    """Makes the next `ensure` of every source list it again."""
    _CHECKED.clear()


def _ensure(options, processes, any_size, again):
    rows = listing(options.path)
    if not (any_size or again or wants_streaming(options, rows)):
        return None
    digest = fingerprint(rows)
    found = manifest(options)
    if not again and found and found.get("fingerprint") == digest:
        return found
    os.makedirs(cache_root(options.data_dir), exist_ok=True)
    with _lock(options.slot):
        found = manifest(options)  # another process may have prepared it meanwhile
        if not again and found and found.get("fingerprint") == digest:
            return found
        stale_tmp = files.remove_stale_staging(
            os.path.dirname(options.slot), f".tmp-{os.path.basename(options.slot)}-"
        )
        if again and found:
            print(f"Preparing {options.path} again (--force).")
        elif found:
            old_rows = _read_listing(options.slot)
            changes = f" ({_changes(old_rows, rows)})" if old_rows is not None else ""
            print(f"{options.path} changed since it was prepared{changes}: preparing it again.")
        elif stale_tmp or os.path.isdir(options.slot):
            print(f"A previous prepare of {options.path} was interrupted: starting it again.")
        else:
            print(
                f"Preparing {options.path} ({len(rows):,} file(s)) into {options.slot}: "
                "once; later commands stream it."
            )
        return _prepare(options, rows, digest, processes)


def _read_listing(slot: str):
    try:
        with open(os.path.join(slot, LISTING)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _lock(slot: str):
    """An exclusive lock on `slot` (its `.lock` file beside it) across processes."""
    with open(f"{slot}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(options: Options, rows: list, digest: str, processes: int | None) -> dict:
    start = time.perf_counter()
    splits, class_names, count = _plan(options)
    _check_space(options, splits, count)
    slot = options.slot
    parent, name = os.path.dirname(slot), os.path.basename(slot)
    if os.path.isdir(slot):  # stale or broken: out of the way first, atomically
        doomed = os.path.join(parent, f".tmp-{name}-{os.getpid()}-old")
        os.rename(slot, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    try:
        with files.atomic_dir(slot) as staging:
            stats = _write(options, splits, class_names, count, staging, processes)
            with open(os.path.join(staging, LISTING), "w") as f:
                json.dump(rows, f)
            found = {
                **options.key(),
                "fingerprint": digest,
                "class_names": list(class_names),
                "image_shape": stats["image_shape"],
                "splits": stats["splits"],
                "processes": stats["processes"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            files.write_json(os.path.join(staging, MANIFEST), found)  # last: marks it whole
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(options, None) from None
        raise
    except Exception as e:  # TensorFlow's file errors are not OSErrors
        if "No space left on device" in str(e) or "Disk quota" in str(e):
            raise _no_space(options, None) from None
        raise
    total = sum(stats["splits"].values())
    print(
        f"Prepared {total:,} images ({', '.join(f'{k} {v:,}' for k, v in stats['splits'].items())})"
        f" in {found['seconds']} s into {slot}."
    )
    return found


def _plan(options: Options):
    """`({split: source}, class names, image count)`: a source is a list of
    files (a folder) or `(images, labels)` arrays (an array file)."""
    if os.path.isdir(options.path):
        splits, names = local_data.plan_folder(options.path, options.test_fraction)
        return splits, names, sum(len(f) for f, _ in splits.values())
    arrays, names = local_data.load_local(
        options.path, options.image_size, options.channels, options.test_fraction
    )
    return arrays, names, sum(len(x) for x, _ in arrays.values())


def _check_space(options: Options, splits: dict, count: int):
    """Refuses at once a prepare that cannot fit (a guess from the first image)."""
    first = next(iter(splits.values()))[0]
    if isinstance(first, np.ndarray):
        per_image = int(np.prod(first.shape[1:]))
    else:
        per_image = int(np.prod(local_data.decode(first[0], options.image_size).shape))
    needed = count * (per_image + 64)
    root = cache_root(options.data_dir)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise _no_space(options, (needed, free))


def _no_space(options: Options, sizes) -> UsageError:
    root = cache_root(options.data_dir)
    amounts = ""
    if sizes:
        amounts = f" (about {sizes[0] / 2**20:,.0f} MB needed, {sizes[1] / 2**20:,.0f} MB free)"
    return UsageError(
        f"Not enough disk space in {root} to prepare {options.path}{amounts}; nothing was "
        f"kept. Free some space, or pass --data-dir DIR on a larger disk (or set {CACHE_ENV})."
    )


def default_processes() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: str, feature: bytes) -> bytes:
    return _field(1, _field(1, key.encode()) + _field(2, feature))  # Features.feature[key]


def _int64s(values) -> bytes:
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))  # Int64List, packed


def serialize(image: np.ndarray, index: int, label: int | None) -> bytes:
    """The `tf.train.Example` that TFDS writes for `{"image", "index", "label"}`
    (`features`), built here without TensorFlow so that the decoding
    processes need not load it; `tests/test_prepared.py` checks it against
    TFDS's own `serialize_example`."""
    before, after = _image_entries(image.shape)
    entries = [before, image.tobytes(), after, _entry("index", _int64s([index]))]
    if label is not None:
        entries.append(_entry("label", _int64s([label])))
    body = b"".join(entries)
    return b"\n" + _varint(len(body)) + body  # Example.features (field 1)


@functools.lru_cache(maxsize=256)
def _image_entries(shape: tuple) -> tuple:
    """The bytes of an image's two entries before and after its pixels (which
    end the first): the same for every image of one shape."""
    size = int(np.prod(shape))
    value = _entry("image/value", _field(1, _field(1, bytes(size))))  # BytesList
    return value[: len(value) - size], _entry("image/shape", _int64s(shape))


def features(labelled: bool):
    """The TFDS features of a prepared dataset."""
    import tensorflow_datasets as tfds

    spec = {
        "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="bytes"),
        "index": tfds.features.Tensor(shape=(), dtype=np.int64),
    }
    if labelled:
        spec["label"] = tfds.features.Tensor(shape=(), dtype=np.int64)
    return tfds.features.FeaturesDict(spec)


def _masked_crc(data: bytes) -> int:
    """The masked CRC-32C of TFRecord framing."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its CRC, the record, its CRC (what
    `tf.io.TFRecordWriter` writes; `tests/test_prepared.py` reads it back
    with `tf.data.TFRecordDataset`, which checks both CRCs)."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", _masked_crc(length)),
            record,
            struct.pack("<I", _masked_crc(record)),
        )
    )


_PROGRESS = None  # a decoding process's shared count of the images it wrote


def _count_into(counter):
    global _PROGRESS
    _PROGRESS = counter


def _shard_task(job, image_size, channels):
    """Write one shard: `job` is its path and `(source, index, label)` items,
    a source being a file (decoded here) or an image. Returns
    `({"shapes", "rgb", "bytes"}, None)`, or `(None, the error)` for a bad
    file (reported as a value: see `_decoding_pool`)."""
    path, items = job
    shapes, rgb, written, pending = {}, False, 0, 0
    with open(path, "wb") as out:
        for source, index, label in items:
            if isinstance(source, str):
                try:
                    image = local_data.decode(source, image_size, channels)
                except UsageError as e:
                    return None, str(e)
            else:
                image = source
            record = serialize(image, index, label)
            out.write(frame(record))
            shapes.setdefault(tuple(image.shape[:2]), index)
            rgb |= image.shape[-1] == 3
            written += len(record)
            pending += 1
            if pending == PROGRESS_EVERY or index == items[-1][1]:
                if _PROGRESS is not None:
                    with _PROGRESS.get_lock():
                        _PROGRESS.value += pending
                pending = 0
    return {"shapes": shapes, "rgb": rgb, "bytes": written}, None


def _decoding_pool(processes: int):
    """Processes that decode images, and their shared count of the images
    written: spawned, not forked (the command may run
    TensorFlow's threads), and without re-running the program's `__main__`
    (a script without an `if __name__ == "__main__"` guard would otherwise
    start its work again in each of them). They import `local_data` only,
    and report a bad file as a value, so their stderr (and that of
    multiprocessing's resource tracker, which outlives them) is /dev/null: an
    inherited copy of the command's filtered stderr would keep its pipe open
    at exit (`cli.common.quiet_console`)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    environ = dict(os.environ)
    # glibc's malloc in a fresh process maps and unmaps each decoded image's
    # buffers: 1.2 million page faults and 3.6 s of system time on 20,000
    # JPEGs (2 processes), against 33,000 with these thresholds; they read
    # these at start.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 20))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 << 20))
    try:
        os.dup2(devnull, 2)
        context = multiprocessing.get_context("spawn")
        counter = context.Value("q", 0)  # its lock starts the resource tracker
        return context.Pool(processes, initializer=_count_into, initargs=(counter,)), counter
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(environ)
        sys.modules["__main__"] = main


def _write(options, splits, class_names, count, staging, processes):
    """The TFDS dataset of `splits` in `staging`; returns its shapes and counts.

    Decoding is the work (0.7 ms an image). Each split is cut into TFRecord
    shards of about `SHARD_IMAGES`, and with `processes` > 1 each process
    decodes, encodes (`serialize`) and writes whole shards, so nothing but
    paths crosses between processes; none loads TensorFlow. Last come TFDS's
    metadata (`tfds.folder_dataset.write_metadata`): the result is read like
    any TFDS dataset (`tfds.builder_from_directory`).
    """
    import tensorflow_datasets as tfds  # without TensorFlow
    from tqdm import tqdm

    processes = max(1, int(processes or default_processes()))
    labelled = any(labels is not None for _, labels in splits.values())
    folder = os.path.isdir(options.path)
    pooled = folder and processes > 1 and count >= POOL_MIN_IMAGES
    tfds_dir = os.path.join(staging, TFDS_NAME, TFDS_VERSION)
    os.makedirs(tfds_dir)
    jobs, split_infos = [], []
    for split, (source, labels) in splits.items():
        size = len(source)
        template = tfds.core.ShardedFileTemplate(
            data_dir=tfds_dir, dataset_name=TFDS_NAME, split=split, filetype_suffix="tfrecord"
        )
        shards = min(MAX_SHARDS, max(1, -(-size // SHARD_IMAGES)))
        if pooled:  # as many shards for each process
            shards = min(max(1, size), -(-shards // processes) * processes)
        lengths = [size // shards + (k < size % shards) for k in range(shards)]
        paths = template.sharded_filepaths(shards)
        first = 0
        for path, length in zip(paths, lengths, strict=True):
            items = [
                (source[i], i, None if labels is None else int(labels[i]))
                for i in range(first, first + length)
            ]
            jobs.append((split, os.fspath(path), items))
            first += length
        split_infos.append((split, lengths, template))
    task = functools.partial(_shard_task, image_size=options.image_size, channels=options.channels)
    pool, counter = _decoding_pool(processes) if pooled else (None, None)
    progress = tqdm(
        total=count,
        desc="Preparing",
        unit=" images",
        disable=None if count >= 100 else True,
        file=sys.stdout,
        smoothing=0.1,
    )
    try:
        if pool:
            pending = [pool.apply_async(task, ((path, items),)) for _, path, items in jobs]
            while not all(r.ready() for r in pending):
                time.sleep(0.1)
                progress.update(counter.value - progress.n)
                if any(r.ready() and r.get()[1] for r in pending):
                    break  # a bad file: no need to decode the rest
            outcomes = [r.get() if r.ready() else (None, None) for r in pending]
        else:
            outcomes = []
            for _, path, items in jobs:
                outcomes.append(task((path, items)))
                progress.update(len(items))
                if outcomes[-1][1]:
                    break
        errors = [error for _, error in outcomes if error]
        if errors:
            raise UsageError(errors[0])
        results = [
            (split, result) for (split, _, _), (result, _) in zip(jobs, outcomes, strict=True)
        ]
        progress.update(count - progress.n)
    finally:
        progress.close()
        if pool:
            pool.terminate()
            pool.join()
    shapes, rgb, written = {}, False, collections.Counter()
    for split, result in results:
        for shape, index in result["shapes"].items():
            shapes.setdefault(shape, (split, index))
        rgb |= result["rgb"]
        written[split] += result["bytes"]
    with contextlib.redirect_stdout(io.StringIO()):
        tfds.folder_dataset.write_metadata(
            data_dir=tfds_dir,
            features=features(labelled),
            split_infos=[
                tfds.core.SplitInfo(
                    name=split,
                    shard_lengths=lengths,
                    num_bytes=written[split],
                    filename_template=template,
                )
                for split, lengths, template in split_infos
            ],
            version=TFDS_VERSION,
            check_data=False,
            description=f"{options.path}, prepared by keras-vae.",
        )
    if len(shapes) > 1 and not options.image_size:
        first = {}
        for shape, (split, i) in shapes.items():
            source = splits[split][0]
            first[shape] = source[i] if folder else f"{split} image {i}"
        raise local_data.mixed_sizes_error(options.path, first)
    height, width = next(iter(shapes))
    channels = options.channels or (3 if rgb else 1)
    return {
        "image_shape": [int(height), int(width), channels],
        "splits": {split: len(source[0]) for split, source in splits.items()},
        "processes": processes if pooled else 1,
    }
