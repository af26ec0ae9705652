"""`--strategy NAME` -> a `tf.distribute.Strategy`, with the checks users need.

- `auto`: `tpu` when one is configured (`--tpu` or `TPU_NAME`), `mirrored`
  when the machine has more than one GPU, else `default`.
- `default`: TensorFlow's default, one device (the first GPU, else the CPU).
- `one_device`: `OneDeviceStrategy` on `/gpu:0`, or `/cpu:0` without a GPU.
- `mirrored`: `MirroredStrategy` over every local GPU, or every logical CPU
  device (`--logical-cpus N`).
- `multi_worker`: `MultiWorkerMirroredStrategy` over the cluster in TF_CONFIG.
- `tpu`: `TPUStrategy` on the TPU at `--tpu` (`local` on a Cloud TPU VM).

`--batch-size` is always the global batch: each of the N replicas gets
`batch_size / N` examples per step, and the loss is averaged over the global
batch, so one step is the same step whatever N is. The learning rate is not
rescaled: the same global batch and learning rate give the same training.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from keras_vae import choices
from keras_vae.errors import UsageError

STRATEGIES = choices.STRATEGIES


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices (before TF starts)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != num_devices:
            raise UsageError(
                f"Cannot split the CPU into {num_devices} devices: TensorFlow has already "
                f"started with {current}. Set --logical-cpus before anything else runs."
            ) from None


def parse_tf_config() -> dict:
    """TF_CONFIG as TensorFlow defines it, checked, with a clear error if not."""
    raw = os.environ.get("TF_CONFIG")
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise UsageError(
            f"`--strategy multi_worker` needs the TF_CONFIG environment variable, {example}."
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"Malformed TF_CONFIG ({type(e).__name__}: {e}); expected {example}."
        ) from None
    if not isinstance(workers, list) or not workers:
        raise UsageError(
            f"Malformed TF_CONFIG: cluster.worker must be a non-empty list; {example}."
        )
    known = config["cluster"].get(task_type)
    if known is None or not 0 <= index < len(known):
        raise UsageError(
            f"Malformed TF_CONFIG: task {task_type}:{index} is not in the cluster "
            f"{sorted(config['cluster'])}; {example}."
        )
    return config


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy called `name` (see the module docstring)."""
    if name not in STRATEGIES:
        raise UsageError(
            f"Invalid value received for `--strategy`. Expected one of {list(STRATEGIES)}. "
            f"Received: {name!r}"
        )
    # Physical, not logical: listing logical devices starts the TF context, after
    # which MultiWorkerMirroredStrategy can no longer configure collectives.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        if tpu or os.environ.get("TPU_NAME"):
            name = "tpu"
        elif len(gpus) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        if len(devices) < 2:
            raise UsageError(
                f"`--strategy mirrored` needs at least 2 devices; this machine has "
                f"{len(devices)} ({', '.join(devices)}). Use `--strategy default`, or "
                "`--logical-cpus 2` to exercise mirrored training on one CPU."
            )
        cross_device = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device)
    if name == "multi_worker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    address = tpu or os.environ.get("TPU_NAME")
    if not address:
        raise UsageError(
            "`--strategy tpu` needs a TPU: pass `--tpu local` on a Cloud TPU VM, or "
            "`--tpu NAME_OR_GRPC_ADDRESS` (or set TPU_NAME)."
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if address == "local" else address
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"No TPU found at {address!r}: {e}") from None
    return tf.distribute.TPUStrategy(resolver)


def worker_index(strategy) -> int:
    """This process's index among the workers (0 when there is one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    return int(resolver.task_id or 0)


def is_chief(strategy) -> bool:
    """Only the chief writes the model, metrics, pictures and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def describe(strategy) -> dict:
    name = type(strategy).__name__
    if is_multi_worker(strategy):
        name = "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    return {
        "name": name,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": int(getattr(strategy.extended, "_num_workers", 1) or 1),
    }


def display_name(name: str) -> str:
    """A strategy's name (`describe(...)["name"]`) as the console and the report show it."""
    return "default" if name == "_DefaultDistributionStrategy" else name


def check_batch_size(batch_size: int, strategy) -> int:
    """The per-replica batch, or an error if the global batch does not split."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(
            f"`--batch-size {batch_size}` does not split over {replicas} replicas. Pass a "
            f"multiple of {replicas}, e.g. {max(replicas, batch_size // replicas * replicas)}."
        )
    return batch_size // replicas
