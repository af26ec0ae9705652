"""Where a generated image's latent comes from: the prior, or a GMM fitted after training.

- `prior`: the model's own prior, through `prior_layer.from_noise`.
- `gmm`: Pythae's `GMMSampler` idea (Ghosh et al. 2020, "From variational
  to deterministic autoencoders"): a Gaussian mixture fitted, after
  training, to the posterior means of the training images with
  scikit-learn's `GaussianMixture` (full covariances). Its draws land where
  the decoder was trained, not in the prior's regions that no posterior
  covers, which gives sharper samples.

A run's GMM is fitted once and kept as `RUN/gmm_sampler.npz` (plain arrays,
no pickle); `run_gmm` reads it back. Both samplers draw from the same
randomness, standard normal `noise (n, latent)` and `uniform (n,)`, so that a
seed gives the same images in `keras_vae.generation`, and the exported
`generate_gmm` signature samples through the same `from_noise`.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import tensorflow as tf

from keras_vae import choices, data, evaluation, presets, priors, runs
from keras_vae.errors import UsageError

SAMPLERS = choices.SAMPLERS
GMM_FILE = presets.GMM_FILE  # one name in a run and in a preset
GMM_COMPONENTS = 10  # Pythae's default
GMM_SEED = 0


class GaussianMixtureSampler:
    """A full-covariance Gaussian mixture over the latent space.

    Args:
        weights: `(K,)`, summing to 1.
        means: `(K, latent)`.
        covariances: `(K, latent, latent)`, positive definite.
    """

    def __init__(self, weights, means, covariances):
        self.weights = np.asarray(weights, np.float32)
        self.means = np.asarray(means, np.float32)
        self.covariances = np.asarray(covariances, np.float32)
        if self.means.ndim != 2:
            raise UsageError(f"Inconsistent mixture: means of shape {self.means.shape}.")
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covariances.shape != (k, d, d):
            raise UsageError(
                f"Inconsistent mixture: weights {self.weights.shape}, means "
                f"{self.means.shape}, covariances {self.covariances.shape}."
            )
        bad = [
            name
            for name, values in (
                ("weights", self.weights),
                ("means", self.means),
                ("covariances", self.covariances),
            )
            if not np.all(np.isfinite(values))
        ]
        if bad:
            raise UsageError(f"Invalid mixture: its {' and '.join(bad)} hold NaN or infinity.")
        if np.any(self.weights < 0) or not np.isclose(self.weights.sum(), 1.0, atol=1e-3):
            raise UsageError(
                f"Invalid mixture: its weights must be >= 0 and sum to 1; they sum to "
                f"{self.weights.sum():.4g}."
            )
        self.cholesky = np.linalg.cholesky(self.covariances.astype(np.float64)).astype(np.float32)

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def fit(cls, latents, components: int = GMM_COMPONENTS, seed: int = GMM_SEED):
        """Fits the mixture to `latents (n, latent)` with scikit-learn's EM."""
        # scikit-learn loads only when a mixture is fitted (not for --help or training).
        from sklearn.mixture import GaussianMixture

        latents = np.asarray(latents, np.float64)
        if len(latents) < 2:
            raise UsageError(
                f"The GMM sampler is fitted to the training images' latents and needs at "
                f"least 2; the training split has {len(latents)}. Use --sampler prior."
            )
        components = min(components, len(latents))
        fitted = GaussianMixture(
            components, covariance_type="full", random_state=seed, reg_covar=1e-6
        ).fit(latents)
        return cls(fitted.weights_, fitted.means_, fitted.covariances_)

    def from_noise(self, noise, uniform) -> dict:
        """`{"z": mean_c + L_c @ noise, "component": c}`, c picked by `uniform`.

        TF ops with the mixture as constants: the `generate_gmm` signature
        is this function.
        """
        component = priors.pick_component(self.weights, uniform)
        noise = tf.convert_to_tensor(noise, tf.float32)
        z = tf.gather(self.means, component) + tf.linalg.matvec(
            tf.gather(self.cholesky, component), noise
        )
        return {"z": z, "component": component}

    def save(self, path: str) -> None:
        with runs.atomic_write(path, "wb") as f:
            np.savez(f, weights=self.weights, means=self.means, covariances=self.covariances)

    @classmethod
    def load(cls, path: str):
        """The sampler saved in `path`, checked: a damaged or invalid file is refused.

        Raises:
            UsageError: naming the file, what is wrong and how to fit it again.
        """
        fix = (
            "In a run directory, delete it: the next `keras-vae generate --sampler gmm "
            "--model RUN` fits it again. In a preset, reinstall the package."
        )
        try:
            with np.load(path, allow_pickle=False) as saved:
                return cls(saved["weights"], saved["means"], saved["covariances"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UsageError(f"{path} is not a readable GMM sampler ({e}). {fix}") from None
        except np.linalg.LinAlgError as e:
            raise UsageError(
                f"{path}: the GMM sampler's covariances are not positive definite ({e}). {fix}"
            ) from None


def run_gmm(run_dir: str, model, config) -> GaussianMixtureSampler:
    """The run's GMM sampler: read from `RUN/gmm_sampler.npz`, or fitted and saved there."""
    path = os.path.join(run_dir, GMM_FILE)
    if os.path.exists(path):
        gmm = GaussianMixtureSampler.load(path)
        if gmm.latent_dim != model.code_dim:
            raise UsageError(
                f"{path} has {gmm.latent_dim} latents, the model {model.code_dim}; "
                "delete it and it is fitted again."
            )
        return gmm
    images, labels, _, total = data.load_sample(config, config.train_split)
    print(
        f"Fitting the GMM sampler ({GMM_COMPONENTS} components) to the latents of "
        f"{data.sample_note(len(images), total)} training images..."
    )
    latents, _ = evaluation.posterior_statistics(
        model, images, labels=labels if model.num_classes else None
    )
    gmm = GaussianMixtureSampler.fit(latents)
    gmm.save(path)
    return gmm


def draw_latents(
    model, count: int, sampler: str = "prior", gmm=None, temperature: float = 1.0, seed=None
) -> np.ndarray:
    """`count` latents from `sampler`; `temperature` scales the standard normal noise."""
    if sampler not in SAMPLERS:
        raise UsageError(f"Unknown sampler {sampler!r}. Expected one of {list(SAMPLERS)}.")
    if sampler == "gmm" and gmm is None:
        raise UsageError("The gmm sampler needs a fitted mixture (`run_gmm`).")
    rng = np.random.default_rng(seed)
    noise = (temperature * rng.standard_normal((count, model.code_dim))).astype(np.float32)
    uniform = rng.random(count, dtype=np.float32)
    if sampler == "gmm":
        return gmm.from_noise(noise, uniform)["z"].numpy()
    return model.code_from_noise(noise, uniform)["z"].numpy()
