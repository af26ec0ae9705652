"""What `--model` names: a run directory, a `.keras` file or a preset.

`open_source` gives the model with what is known about it: the config it
was trained with (which names its data), its class names, and where its
GMM sampler comes from. `generate` and `python -m export` read models
through it, so the three kinds work alike everywhere.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from keras_vae import presets, runs, samplers
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError
from keras_vae.vae import VAE


@dataclasses.dataclass
class Source:
    model: keras.Model
    name: str  # as the user gave it, for messages
    run_dir: str | None = None
    preset_dir: str | None = None
    config: TrainConfig | None = None  # the training config, where known
    class_names: list = dataclasses.field(default_factory=list)

    @property
    def has_gmm(self) -> bool:
        """Whether `gmm()` has a sampler to give (a run fits one on demand)."""
        return bool(self.run_dir or (self.preset_dir and presets.gmm_file(self.preset_dir)))

    def gmm(self) -> samplers.GaussianMixtureSampler:
        """The GMM sampler: a run's (fitted once, kept in the run), or a preset's own."""
        if self.run_dir:
            return samplers.run_gmm(self.run_dir, self.model, self.config)
        shipped = presets.gmm_file(self.preset_dir) if self.preset_dir else None
        if shipped:
            return samplers.GaussianMixtureSampler.load(shipped)
        raise UsageError(
            f"{self.name}: --sampler gmm is fitted to a run's training images, and this "
            "model comes without a run directory or a fitted sampler. Pass a run "
            "directory (or a preset that ships gmm_sampler.npz), or use --sampler prior."
        )


def open_source(spec: str) -> Source:
    """A run directory, a `.keras` file, a preset folder, or a shipped preset's name.

    Raises:
        UsageError: none of these, naming the shipped presets.
    """
    if presets.is_preset(spec):
        note = presets.shadow_note(spec)
        if note:
            print(note)
        directory = presets.resolve(spec)
        metadata = presets.read(directory)[2]
        saved = metadata.get("train_config")
        config = TrainConfig.from_saved(saved, f"{spec}'s metadata") if saved else None
        return Source(
            VAE.from_preset(directory),
            spec,
            preset_dir=directory,
            config=config,
            class_names=list(metadata.get("class_names", [])),
        )
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, runs.CONFIG_FILE)):
        config, model = runs.load_run(spec)
        metrics_file = os.path.join(spec, runs.METRICS_FILE)
        metrics = runs.read_json(metrics_file) if os.path.isfile(metrics_file) else {}
        names = list(metrics.get("dataset", {}).get("class_names", []))
        return Source(model, spec, run_dir=spec, config=config, class_names=names)
    if spec.endswith(".keras") and os.path.isfile(spec):
        return Source(runs.load_model_file(spec), spec)
    if os.path.isdir(spec):  # a folder that is neither a run nor a preset
        name = os.path.basename(os.path.normpath(spec))
        shipped = (
            f" For the shipped preset, pass its bare name {name}."
            if name in presets.available()
            else ""
        )
        raise UsageError(
            f"--model {spec}: this folder is neither a run directory (it holds no "
            f"{runs.MODEL_FILE}) nor a preset folder. A bare name is a shipped preset; "
            f"a path is a folder.{shipped}"
        )
    raise UsageError(
        f"--model {spec}: no such run directory, .keras file or preset. {presets.naming_rule()}"
    )
