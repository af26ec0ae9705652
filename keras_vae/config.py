"""The training configuration: one dataclass whose fields are the CLI flags.

Each field's `help` metadata becomes its `--help` line, its `min`/`above`
metadata its declared range; the whole config is saved as `config.json` in
the run directory and read back on `--resume`. A protocol (`--protocol`) is
a dict of defaults applied beneath the flags the user gave: an explicit flag
always wins.

This module imports nothing heavy: the command lines parse their flags and
answer `--help` before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os

from keras_vae import choices
from keras_vae.errors import UsageError

# The published setups, as defaults beneath the explicit flags.
_LITERATURE = dict(
    binarize="dynamic",
    train_split="train[:50000]",
    validation_split="train[50000:]",
    early_stopping=20,
    iw_samples=5000,
    iw_images=0,
)
PROTOCOLS = {
    "none": {},
    # The NLL-table data protocol on the default networks.
    "literature": _LITERATURE,
    # The VampPrior paper's "VAE" setup (jmtomczak/vae_vampprior): gated MLP,
    # 40 latents, batch 100, AdamNormGrad at 5e-4, KL warm-up over 100
    # epochs, early stopping with patience 50 counted after the warm-up.
    # Add `--prior vamp --prior-components 500` for its VampPrior rows.
    "vampprior": {
        **_LITERATURE,
        "architecture": "gated_mlp",
        "latent_dim": 40,
        "hidden_units": 300,
        "batch_size": 100,
        "learning_rate": 5e-4,
        "normalize_gradients": True,
        "kl_warmup_epochs": 100.0,
        "early_stopping": 50,
        "epochs": 2000,
    },
}


# K of the IW bound: 20 times the papers' 5000. Above it, the bound would run
# for days on a CPU (the refusal says how long; `iw_cost` below).
MAX_IW_SAMPLES = 100_000
# Decoder passes per second of the IW bound: a round figure for 2 CPU cores
# (benchmarks/iw_speed.py measured 35k-58k for the two-level preset). Only for
# the order of magnitude a refusal and the estimate before the work print.
IW_PASSES_PER_SECOND = 40_000


def iw_cost(iw_samples: int, images: int) -> str:
    """`"1.0e+09 decoder passes, about 7 hours"`: what a bound would cost."""
    passes = iw_samples * images
    seconds = passes / IW_PASSES_PER_SECOND
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{passes:.1e} decoder passes, about {seconds / size:.0f} {unit} on 2 CPU cores"
    return f"{passes:.1e} decoder passes, about {max(seconds, 1):.0f} s on 2 CPU cores"


def too_many_iw_samples(iw_samples: int) -> str:
    """What a K above `MAX_IW_SAMPLES` would cost, for its refusal."""
    return f"it would cost {iw_cost(iw_samples, 1000)} for 1,000 test images. Papers use 5000"


def dataset_is_path(name: str) -> bool:
    """Whether `--dataset` names a folder or array file rather than a TFDS dataset."""
    return (
        os.sep in name
        or name.startswith("~")
        or name.endswith((".npz", ".npy"))
        or os.path.isdir(name)
    )


def check_dataset_path(path: str) -> None:
    """A `--dataset` path must exist: checked before TensorFlow loads, so that a
    mistyped path fails at once (the contents are checked as they are read)."""
    if not os.path.exists(os.path.expanduser(path)):
        raise UsageError(
            f"--dataset {os.path.abspath(os.path.expanduser(path))}: no such file or folder. "
            "Pass a folder of images, a .npz or .npy file of uint8 images, or a TFDS "
            "dataset name such as fashion_mnist."
        )


def _field(default, help, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class TrainConfig:
    # --- data ---
    dataset: str = _field(
        "fashion_mnist",
        "TFDS image dataset name, or a folder of images (class subfolders become labels; "
        "train/ and test/ subfolders the splits) or a .npz/.npy file of uint8 images.",
        group="Data",
    )
    data_dir: str | None = _field(
        None,
        "TFDS data directory (default: TFDS's own); folders and arrays are prepared in "
        "DIR/keras_vae_prepared (default: ~/.cache/keras-vae/prepared).",
        group="Data",
    )
    download: bool = _field(False, "Let TFDS download the dataset (needs internet).", group="Data")
    train_split: str = _field("train", "TFDS split to train on.", group="Data")
    test_split: str = _field("test", "TFDS split to evaluate on.", group="Data")
    image_size: int | None = _field(
        None,
        "Resize images to SIZE x SIZE (e.g. 64 for celeb_a).",
        min=1,
        group="Data",
    )
    test_fraction: float = _field(
        0.1,
        "A folder or array without its own test split: the share of images held out "
        "(seeded) as the 'test' split.",
        above=0,
        below=1,
        group="Data",
    )
    channels: int | None = _field(
        None,
        "Convert images to 1 (grey) or 3 (RGB) channels (default: the data's own).",
        choices=(1, 3),
        group="Data",
    )
    binarize: str = _field(
        "none",
        "Pixel binarization: none (keep [0,1] intensities), dynamic (fresh "
        "Bernoulli pixels each time an image is seen) or static (once, seeded).",
        choices=choices.BINARIZE_MODES,
        group="Data",
    )
    # --- model ---
    architecture: str = _field(
        "conv",
        "Networks: conv (the TF tutorial's convolutional VAE), gated_mlp (the "
        "VampPrior paper's two GatedDense layers of --hidden-units), or the same "
        "paper's two-level models, each level --latent-dim: hvae (GatedDense) and "
        "conv_hvae (gated convolutions of --base-filters).",
        choices=choices.ARCHITECTURES,
        group="Model",
    )
    latent_dim: int = _field(16, "Size of the latent vector z.", min=1, group="Model")
    likelihood: str = _field(
        "bernoulli", "Pixel likelihood p(x|z).", choices=choices.LIKELIHOODS, group="Model"
    )
    prior: str = _field(
        "standard_normal", "Latent prior p(z).", choices=choices.PRIORS, group="Model"
    )
    prior_components: int | None = _field(
        None,
        "Components of a mixture or vamp prior (default: 10 and 50).",
        min=1,
        group="Model",
    )
    pseudo_inputs: str = _field(
        "sigmoid",
        "The vamp prior's pseudo-images: sigmoid (of weights started N(0, 0.1): grey) "
        "or hardtanh (clipped to [0, 1], started N(0.05, 0.01): near black, as the "
        "paper's code).",
        choices=choices.PSEUDO_INPUTS,
        group="Model",
    )
    conditional: bool = _field(
        False,
        "Condition encoder and decoder on the dataset's labels (generate chosen classes).",
        group="Model",
    )
    beta: float = _field(
        1.0, "Weight of the KL term in the training objective.", min=0, group="Objective"
    )
    objective: str = _field(
        "elbo",
        "Training objective: elbo, or iwae (importance-weighted, --iw-k samples).",
        choices=choices.OBJECTIVES,
        group="Objective",
    )
    iw_k: int = _field(5, "Samples per image of the IWAE objective.", min=1, group="Objective")
    kl_warmup_epochs: float = _field(
        0.0,
        "Grow the KL weight linearly from 0 to --beta over this many epochs (0: off).",
        min=0,
        group="Objective",
    )
    free_bits: float = _field(
        0.0, "Floor in nats on each latent dimension's KL (0: off).", min=0, group="Objective"
    )
    base_filters: int = _field(
        32,
        "conv: filters of the first convolution (doubled per stage).",
        min=1,
        group="Model",
    )
    hidden_units: int = _field(
        300, "gated_mlp: units of each GatedDense layer.", min=1, group="Model"
    )
    # --- optimisation ---
    epochs: int = _field(
        10, "Training epochs (in all, counting a resumed run's).", min=1, group="Training"
    )
    batch_size: int = _field(128, "Global batch size.", min=1, group="Training")
    learning_rate: float = _field(1e-3, "Adam learning rate.", above=0, group="Training")
    normalize_gradients: bool = _field(
        False,
        "Divide each gradient by its L2 norm before Adam (the VampPrior paper's AdamNormGrad).",
        group="Training",
    )
    clipnorm: float | None = _field(
        None,
        "Clip each gradient to this norm (default: no clipping).",
        above=0,
        group="Training",
    )
    validation_split: str | None = _field(
        None,
        "TFDS split for validation, e.g. 'train[50000:]' (default: curves on --test-split).",
        group="Data",
    )
    early_stopping: int = _field(
        0,
        "Stop after this many epochs without validation improvement, keeping the best; "
        "epochs of KL warm-up do not count (0: off).",
        min=0,
        group="Training",
    )
    protocol: str = _field(
        "none",
        "Defaults of a published setup, beneath the flags you give: literature (dynamic "
        "binarization, train[:50000] / train[50000:] validation with early stopping 20, "
        "IW bound K=5000 on the whole test split) or vampprior (literature plus the "
        "VampPrior paper's gated_mlp, 40 latents, batch 100, lr 5e-4, "
        "--normalize-gradients, KL warm-up 100 epochs, patience 50, 2000 epochs).",
        choices=tuple(PROTOCOLS),
        group="Training",
    )
    seed: int | None = _field(
        None, "Random seed; the same seed gives identical losses on CPU.", group="Training"
    )
    mixed_precision: str = _field(
        "auto",
        "Compute dtype policy of the networks (distributions stay float32). auto: "
        "mixed_bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX) and on TPUs, "
        "mixed_float16 on GPUs, else float32.",
        choices=choices.PRECISIONS,
        group="Training",
    )
    jit_compile: bool = _field(False, "Compile the train step with XLA.", group="Training")
    # --- devices ---
    strategy: str = _field(
        "auto",
        "tf.distribute strategy: auto (TPU if configured, mirrored with several GPUs, "
        "else default), default, one_device, mirrored, multi_worker (reads TF_CONFIG) "
        "or tpu.",
        choices=choices.STRATEGIES,
        group="Devices",
    )
    tpu: str | None = _field(
        None, "TPU for --strategy tpu: a name, grpc:// address or local.", group="Devices"
    )
    logical_cpus: int | None = _field(
        None,
        "Split the CPU into N logical devices (to run mirrored on one CPU).",
        min=1,
        group="Devices",
    )
    # --- outputs ---
    output_dir: str | None = _field(
        None,
        "Run directory (default: runs/DATASET-TIMESTAMP). Never overwritten.",
        group="Output",
    )
    resume: bool = _field(False, "Resume the interrupted run in --output-dir.", group="Training")
    num_images: int = _field(
        64, "Images in the sample and reconstruction grids.", min=1, group="Evaluation"
    )
    iw_samples: int = _field(
        100,
        "K of the importance-weighted bound computed on the test split at the end "
        "(0: skip); it costs K decoder passes per image. Papers use K=5000 on the whole "
        f"split. At most {MAX_IW_SAMPLES:,}.",
        min=0,
        max=MAX_IW_SAMPLES,
        over_max=too_many_iw_samples,
        group="Evaluation",
    )
    iw_images: int = _field(
        1000,
        "Test images of the end-of-run IW bound: the first N (0: the whole split).",
        min=0,
        group="Evaluation",
    )
    shifted_dataset: str | None = _field(
        None,
        "TFDS dataset to score against the test set in the anomaly picture (e.g. mnist).",
        group="Evaluation",
    )
    export: bool = _field(
        True,
        "Export a SavedModel (TF Serving) and TFLite files (LiteRT) at the end.",
        group="Output",
    )
    model_name: str = _field(
        "vae", "Model name for TF Serving: saved_model/NAME/VERSION.", group="Output"
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if dataset_is_path(self.dataset):  # resume and evaluate find it from any folder
            self.dataset = os.path.abspath(os.path.expanduser(self.dataset))
        if self.early_stopping and not self.validation_split:
            raise UsageError(
                "`--early-stopping` needs `--validation-split` (e.g. 'train[50000:]' with "
                "--train-split 'train[:50000]'): stopping on the test split would select on it."
            )
        if self.resume and not self.output_dir:
            raise UsageError("`--resume` needs `--output-dir RUN_DIR`: the run to resume.")
        if self.architecture in choices.TWO_LEVEL_ARCHITECTURES and (
            self.conditional or self.free_bits
        ):
            raise UsageError(
                f"`--architecture {self.architecture}` (two levels) takes neither "
                "`--conditional` nor `--free-bits`: drop them, or use `--architecture "
                "gated_mlp` or `conv`."
            )
        if self.pseudo_inputs != "sigmoid" and self.prior != "vamp":
            raise UsageError(
                f"`--pseudo-inputs {self.pseudo_inputs}` is the vamp prior's: add "
                "`--prior vamp`, or drop it."
            )

    @classmethod
    def from_flags(cls, **flags) -> TrainConfig:
        """The config for the flags a user gave: their protocol's defaults beneath them."""
        protocol = flags.get("protocol", "none")
        if protocol not in PROTOCOLS:
            _check_field(_FIELDS["protocol"], protocol)
        return cls(**{**PROTOCOLS[protocol], **flags})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str) -> TrainConfig:
        """The config saved in `path`, checked like flags.

        Raises:
            UsageError: the file is not JSON, or holds unknown keys or bad values.
        """
        try:
            with open(path) as f:
                saved = json.load(f)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} is not valid JSON ({e}).") from None
        return cls.from_saved(saved, path)

    @classmethod
    def from_saved(cls, saved, where: str) -> TrainConfig:
        """A config saved as a dict (a run's config.json, a preset's metadata),
        checked like flags; `where` names it in errors."""
        if not isinstance(saved, dict):
            raise UsageError(f"{where} must hold a JSON object of flags.")
        unknown = sorted(set(saved) - set(_FIELDS))
        if unknown:
            raise UsageError(
                f"{where} holds unknown keys {unknown}; expected the flags of train.py "
                f"({', '.join(sorted(_FIELDS))})."
            )
        try:
            return cls(**saved)
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_field(f: dataclasses.Field, value) -> None:
    """One field's declared type, choices and range; NaN and infinities are refused."""
    flag = f"`--{_flag(f.name)}`"
    if value is None and f.default is None:
        return
    allowed = f.metadata.get("choices")
    if allowed and value not in allowed:
        raise UsageError(
            f"Invalid value received for {flag}. Expected one of {list(allowed)}. "
            f"Received: {value!r}"
        )
    if value is None or allowed:
        return
    kind = str(f.type).split(" |")[0]
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[kind]
    if not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool)):
        raise UsageError(
            f"Invalid value received for {flag}. Expected a value of type {kind}. "
            f"Received: {value!r}"
        )
    if kind == "float" and not math.isfinite(value):
        raise UsageError(
            f"Invalid value received for {flag}. Expected a finite number. Received: {value}"
        )
    low, above, below, high = (f.metadata.get(k) for k in ("min", "above", "below", "max"))
    if high is not None and value > high:
        why = f.metadata.get("over_max")
        raise UsageError(
            f"Invalid value received for {flag}. Expected a value <= {high:,}. Received: "
            f"{value:,}" + (f": {why(value)}." if why else "")
        )
    if (
        (low is not None and value < low)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        bound = " and ".join(
            text
            for text, limit in ((f">= {low}", low), (f"> {above}", above), (f"< {below}", below))
            if limit is not None
        )
        raise UsageError(
            f"Invalid value received for {flag}. Expected a value {bound}. Received: {value}"
        )


# Flags that may differ from the saved config when resuming a run.
RESUMABLE_OVERRIDES = (
    "epochs",
    "output_dir",
    "resume",
    "data_dir",
    "download",
    "export",
    "iw_samples",
    "iw_images",
)


def _flag(name: str) -> str:
    return name.replace("_", "-")


# The order of the flag groups in `--help`.
FLAG_GROUPS = ("Data", "Model", "Objective", "Training", "Evaluation", "Devices", "Output")


def build_parser(
    parser: argparse.ArgumentParser | None = None, only: tuple | None = None
) -> argparse.ArgumentParser:
    """Adds one flag per `TrainConfig` field (or per field in `only`) to
    `parser`, in its group.

    Defaults are suppressed so that `parse_config` can tell which flags were
    given (needed to merge them into a resumed run's config).
    """
    parser = parser or argparse.ArgumentParser()
    parser.argument_default = argparse.SUPPRESS
    fields = [f for f in dataclasses.fields(TrainConfig) if only is None or f.name in only]
    used = [name for name in FLAG_GROUPS if any(f.metadata["group"] == name for f in fields)]
    groups = {name: parser.add_argument_group(name) for name in used}
    for f in fields:
        group = groups[f.metadata["group"]]
        flag = "--" + _flag(f.name)
        help_text = f.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {f.default})"
        if f.type in ("bool", bool):
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        type_ = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        group.add_argument(
            flag,
            type=type_,
            choices=f.metadata.get("choices"),
            metavar=f.name.upper() if not f.metadata.get("choices") else None,
            default=argparse.SUPPRESS,
            help=help_text,
        )
    return parser


def parse_config(argv=None, parser=None) -> TrainConfig:
    """Flags -> `TrainConfig`; with `--resume`, the saved config plus overrides."""
    parser = parser or build_parser()
    return config_from_flags(vars(parser.parse_args(argv)))


def config_from_flags(given: dict) -> TrainConfig:
    """The flags given (`build_parser`'s namespace as a dict) -> `TrainConfig`."""
    given = {k: v for k, v in given.items() if k != "verbose"}  # a console flag
    if not given.get("resume"):
        return TrainConfig.from_flags(**given)
    if not given.get("output_dir"):
        raise UsageError("`--resume` needs `--output-dir RUN_DIR`: the run to resume.")
    path = os.path.join(given["output_dir"], "config.json")
    if not os.path.isfile(path):
        raise UsageError(
            f"Cannot resume: {path} does not exist. `--output-dir` must be a run "
            "directory written by train.py."
        )
    saved = dataclasses.asdict(TrainConfig.from_json_file(path))
    changed = sorted(
        k for k, v in given.items() if k not in RESUMABLE_OVERRIDES and saved.get(k) != v
    )
    if changed:
        raise UsageError(
            f"Cannot change {', '.join('--' + _flag(k) for k in changed)} when "
            f"resuming; only {', '.join('--' + _flag(k) for k in RESUMABLE_OVERRIDES)} "
            "may differ from the saved config.json."
        )
    return TrainConfig(**{**saved, **given})
