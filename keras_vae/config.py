"""The training configuration: one dataclass whose fields are the CLI flags.

Each field's `help` metadata becomes its `--help` line; the whole config is
saved as `config.json` in the run directory and read back on `--resume`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from keras_vae import likelihoods, priors
from keras_vae.data import BINARIZE_MODES

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _field(default, help, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class TrainConfig:
    # --- data ---
    dataset: str = _field("fashion_mnist", "TFDS image dataset name.")
    data_dir: str | None = _field(None, "TFDS data directory (default: TFDS's own).")
    download: bool = _field(False, "Let TFDS download the dataset (needs internet).")
    train_split: str = _field("train", "TFDS split to train on.")
    test_split: str = _field("test", "TFDS split to evaluate on.")
    image_size: int | None = _field(None, "Resize images to SIZE x SIZE (e.g. 64 for celeb_a).")
    binarize: str = _field(
        "none",
        "Pixel binarization: none (keep [0,1] intensities), dynamic (fresh "
        "Bernoulli pixels each time an image is seen) or static (once, seeded).",
        choices=BINARIZE_MODES,
    )
    # --- model ---
    latent_dim: int = _field(16, "Size of the latent vector z.")
    likelihood: str = _field(
        "bernoulli", "Pixel likelihood p(x|z).", choices=tuple(likelihoods.available_likelihoods())
    )
    prior: str = _field(
        "standard_normal", "Latent prior p(z).", choices=tuple(priors.available_priors())
    )
    prior_components: int | None = _field(
        None, "Components of a mixture or vamp prior (default: 10 and 50)."
    )
    conditional: bool = _field(
        False, "Condition encoder and decoder on the dataset's labels (generate chosen classes)."
    )
    beta: float = _field(1.0, "Weight of the KL term in the training objective.")
    objective: str = _field(
        "elbo",
        "Training objective: elbo, or iwae (importance-weighted, --iw-k samples).",
        choices=("elbo", "iwae"),
    )
    iw_k: int = _field(5, "Samples per image of the IWAE objective.")
    kl_warmup_epochs: float = _field(
        0.0, "Grow the KL weight linearly from 0 to --beta over this many epochs (0: off)."
    )
    free_bits: float = _field(0.0, "Floor in nats on each latent dimension's KL (0: off).")
    base_filters: int = _field(32, "Filters of the first convolution (doubled per stage).")
    # --- optimisation ---
    epochs: int = _field(10, "Training epochs.")
    batch_size: int = _field(128, "Global batch size.")
    learning_rate: float = _field(1e-3, "Adam learning rate.")
    clipnorm: float | None = _field(None, "Clip each gradient to this norm (default: no clipping).")
    validation_split: str | None = _field(
        None, "TFDS split for validation, e.g. 'train[50000:]' (default: curves on --test-split)."
    )
    early_stopping: int = _field(
        0, "Stop after this many epochs without validation improvement, keeping the best (0: off)."
    )
    protocol: str = _field(
        "none",
        "literature: the NLL-table protocol (dynamic binarization, train[:50000] / "
        "train[50000:] validation with early stopping, a fixed binarized test set, "
        "IW bound with K=5000 unless --iw-samples says otherwise). Sets those flags.",
        choices=("none", "literature"),
    )
    seed: int | None = _field(None, "Random seed; the same seed gives identical losses on CPU.")
    mixed_precision: str = _field(
        "auto",
        "Compute dtype policy of the networks (distributions stay float32). auto: "
        "mixed_bfloat16 on CPUs with bfloat16 and on TPUs, mixed_float16 on GPUs, "
        "else float32.",
        choices=PRECISIONS,
    )
    jit_compile: bool = _field(False, "Compile the train step with XLA.")
    # --- devices ---
    strategy: str = _field(
        "auto",
        "tf.distribute strategy: auto (TPU if configured, mirrored with several GPUs, "
        "else default), default, one_device, mirrored, multi_worker (reads TF_CONFIG) "
        "or tpu.",
        choices=("auto", "default", "one_device", "mirrored", "multi_worker", "tpu"),
    )
    tpu: str | None = _field(None, "TPU for --strategy tpu: a name, grpc:// address or local.")
    logical_cpus: int | None = _field(
        None, "Split the CPU into N logical devices (to run mirrored on one CPU)."
    )
    # --- outputs ---
    output_dir: str | None = _field(
        None, "Run directory (default: runs/DATASET-TIMESTAMP). Never overwritten."
    )
    resume: bool = _field(False, "Resume the interrupted run in --output-dir.")
    num_images: int = _field(64, "Images in the sample and reconstruction grids.")
    iw_samples: int = _field(
        100,
        "K of the importance-weighted bound computed on the test split at the end "
        "(0: skip; 1000 or 5000 for comparisons with papers).",
    )
    shifted_dataset: str | None = _field(
        None, "TFDS dataset to score against the test set in the anomaly picture (e.g. mnist)."
    )
    export: bool = _field(
        True, "Export a SavedModel (TF Serving) and TFLite files (LiteRT) at the end."
    )
    model_name: str = _field("vae", "Model name for TF Serving: saved_model/NAME/VERSION.")

    def __post_init__(self):
        if self.protocol == "literature":
            self.binarize = "dynamic"
            self.train_split = "train[:50000]"
            self.validation_split = "train[50000:]"
            self.early_stopping = self.early_stopping or 20
            if self.iw_samples == 100:  # the default: raise it to the tables' K
                self.iw_samples = 5000
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(
                    f"Invalid value received for `--{_flag(f.name)}`. Expected one of "
                    f"{list(choices)}. Received: {value!r}"
                )
        positive = ["latent_dim", "epochs", "batch_size", "base_filters", "num_images"]
        optional = [n for n in ("image_size", "logical_cpus") if getattr(self, n) is not None]
        for name in positive + optional:
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"Invalid value received for `--{_flag(name)}`. Expected a positive "
                    f"integer. Received: {getattr(self, name)}"
                )
        for name in ("iw_samples", "early_stopping", "kl_warmup_epochs", "free_bits"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Invalid value received for `--{_flag(name)}`. Expected a value >= 0. "
                    f"Received: {getattr(self, name)}"
                )
        if self.iw_k < 1 or (self.clipnorm is not None and self.clipnorm <= 0):
            raise ValueError(
                "Invalid value received for `--iw-k` or `--clipnorm`. Expected iw_k >= 1 and "
                f"clipnorm > 0. Received: iw_k={self.iw_k}, clipnorm={self.clipnorm}"
            )
        if self.learning_rate <= 0 or self.beta < 0:
            raise ValueError(
                "Invalid value received for `--learning-rate` or `--beta`. Expected "
                f"learning_rate > 0 and beta >= 0. Received: learning_rate="
                f"{self.learning_rate}, beta={self.beta}"
            )
        if self.early_stopping and not self.validation_split:
            raise ValueError(
                "`--early-stopping` needs `--validation-split` (e.g. 'train[50000:]' with "
                "--train-split 'train[:50000]'): stopping on the test split would select on it."
            )
        if self.resume and not self.output_dir:
            raise ValueError("`--resume` needs `--output-dir RUN_DIR`: the run to resume.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str) -> TrainConfig:
        with open(path) as f:
            return cls(**json.load(f))


# Flags that may differ from the saved config when resuming a run.
RESUMABLE_OVERRIDES = ("epochs", "output_dir", "resume", "data_dir", "download", "export")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def build_parser(**kwargs) -> argparse.ArgumentParser:
    """An argparse parser with one flag per `TrainConfig` field.

    Defaults are suppressed so that `parse_config` can tell which flags were
    given (needed to merge them into a resumed run's config).
    """
    parser = argparse.ArgumentParser(
        argument_default=argparse.SUPPRESS,
        **kwargs,
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + _flag(f.name)
        help_text = f.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        type_ = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        parser.add_argument(
            flag,
            type=type_,
            choices=f.metadata.get("choices"),
            metavar=f.name.upper() if not f.metadata.get("choices") else None,
            help=help_text,
        )
    return parser


def parse_config(argv=None, parser=None) -> TrainConfig:
    """Flags -> `TrainConfig`; with `--resume`, the saved config plus overrides."""
    parser = parser or build_parser()
    given = vars(parser.parse_args(argv))
    if not given.get("resume"):
        return TrainConfig(**given)
    if not given.get("output_dir"):
        raise ValueError("`--resume` needs `--output-dir RUN_DIR`: the run to resume.")
    path = os.path.join(given["output_dir"], "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"Cannot resume: {path} does not exist. `--output-dir` must be a run "
            "directory written by train.py."
        )
    saved = dataclasses.asdict(TrainConfig.from_json_file(path))
    changed = sorted(
        k for k, v in given.items() if k not in RESUMABLE_OVERRIDES and saved.get(k) != v
    )
    if changed:
        raise ValueError(
            f"Cannot change {', '.join('--' + _flag(k) for k in changed)} when "
            f"resuming; only {', '.join('--' + _flag(k) for k in RESUMABLE_OVERRIDES)} "
            "may differ from the saved config.json."
        )
    return TrainConfig(**{**saved, **given})
