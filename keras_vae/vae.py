"""The `VAE` model: a Keras `Model` whose distributions are TFP's.

Example:

```python
import numpy as np
import keras_vae

images = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)  # in [0, 1]
vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16)
vae.compile(optimizer="adam")
vae.fit(images, epochs=1, verbose=0)
neg_elbo = vae.negative_elbo(images[:8])["loss"]  # (8,) nats per image
assert neg_elbo.shape == (8,)
```

#### Mathematical details

With posterior q(z|x) = N(mean(x), diag(exp(log_var(x)))), prior p(z) and
likelihood p(x|z), each image's loss is the negative ELBO

    -ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || p(z))
             =   reconstruction  +  kl

estimated with one reparameterised sample of z. KL is analytic where TFP
registers it (the default prior) and a one-sample Monte Carlo estimate
otherwise. Training minimises reconstruction + beta * kl; the reported
`loss` is always the true negative ELBO (beta = 1).
"""

from __future__ import annotations

import inspect
import warnings

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import choices, likelihoods, networks, presets, priors
from keras_vae.errors import UsageError

tfd = tfp.distributions

METRIC_NAMES = ("loss", "reconstruction", "kl")
OBJECTIVES = choices.OBJECTIVES


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """A variational autoencoder with TFP posterior, prior and likelihood.

    Args:
        image_shape: tuple of 3 ints. `(height, width, channels)` of the images.
            Defaults to `(28, 28, 1)`.
        latent_dim: int. Size of the latent vector z. Defaults to `16`.
        likelihood: str. A name from `keras_vae.likelihoods`. Defaults to
            `"bernoulli"`.
        prior: str. A name from `keras_vae.priors`. Defaults to
            `"standard_normal"`.
        beta: float. Weight of the KL term in the training objective.
            Defaults to `1.0`.
        base_filters: int. `conv` networks: filters of the first
            convolution; each stage doubles it. Defaults to `32`.
        architecture: str. A one-level name from
            `keras_vae.networks.ARCHITECTURES`: `"conv"` or `"gated_mlp"`
            (`"hvae"` and `"conv_hvae"` are `keras_vae.hvae.HVAE`'s).
            Defaults to `"conv"`.
        hidden_units: int. `gated_mlp` networks: units of each `GatedDense`
            layer. Defaults to `300`.
        seed: int or None. Seed of the sampling noise. Defaults to `None`.
        objective: str. `"elbo"`, or `"iwae"`: the importance-weighted bound
            with `iw_k` samples (Burda et al. 2016). Defaults to `"elbo"`.
        iw_k: int. Samples per image of the IWAE objective. Defaults to `5`.
        kl_warmup_steps: int. The KL weight grows linearly from 0 to `beta`
            over this many optimizer steps; 0 turns warm-up off. Defaults to
            `0`.
        free_bits: float. Floor, in nats, on each latent dimension's KL
            (averaged over the batch) in the objective (Kingma et al. 2016);
            0 turns it off. Defaults to `0.0`.
        prior_components: int or None. Components of a mixture prior
            (`mixture`, `vamp`); None keeps the prior's default (10 and 50).
        pseudo_inputs: str. The VampPrior's pseudo-input form, `"sigmoid"`
            or the paper code's `"hardtanh"` (`keras_vae.priors.VampPrior`).
            Defaults to `"sigmoid"`.
        num_classes: int. With N > 0 the VAE is conditional (Sohn et al.
            2015): encoder and decoder also take a label in [0, N), so that
            `sample_prior(labels=...)` draws items of chosen classes. Every
            method then needs `labels`. Defaults to `0`.
        encoder, decoder: `keras.Model` or None. Networks to use instead of
            building the architecture's (the same inputs and outputs), for
            example another form of a trained model's decoder; see
            `with_decoder`. Not part of `get_config`. Defaults to `None`.
        prior_layer: a prior layer to use (shared) instead of building one.
            Defaults to `None`.
        level_networks: dict or None. For subclasses with more levels: their
            further networks to share (name -> `keras.Model`), built by
            `_build_level_networks` before the model is marked built.

    The two-level architectures (`hvae`, `conv_hvae`) are
    `keras_vae.hvae.HVAE`, a subclass; `VAE.from_preset` and
    `VAE.class_for` pick it from a config.
    """

    # Stochastic levels this class implements, and the class for each count.
    levels = 1
    _classes_by_levels: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        VAE._classes_by_levels.setdefault(cls.levels, cls)

    def __init__(
        self,
        image_shape=(28, 28, 1),
        latent_dim=16,
        likelihood="bernoulli",
        prior="standard_normal",
        beta=1.0,
        base_filters=32,
        seed=None,
        objective="elbo",
        iw_k=5,
        kl_warmup_steps=0,
        free_bits=0.0,
        prior_components=None,
        num_classes=0,
        architecture="conv",
        hidden_units=300,
        pseudo_inputs="sigmoid",
        encoder=None,
        decoder=None,
        prior_layer=None,
        level_networks=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._architecture = networks.get_architecture(architecture)
        if self._architecture.levels != self.levels:
            raise UsageError(
                f"architecture={architecture!r} is a {self._architecture.levels}-level model "
                f"and {type(self).__name__} builds {self.levels}-level ones: use "
                f"`{VAE.class_for({'architecture': architecture}).__name__}` (or "
                "`VAE.class_for(config)`)."
            )
        if objective not in OBJECTIVES:
            raise UsageError(
                "Invalid value received for argument `objective`. Expected one of "
                f"{list(OBJECTIVES)}. Received: objective={objective!r}"
            )
        if int(iw_k) < 1 or int(kl_warmup_steps) < 0 or float(free_bits) < 0:
            raise UsageError(
                "Invalid value received for `iw_k`, `kl_warmup_steps` or `free_bits`. "
                "Expected iw_k >= 1, kl_warmup_steps >= 0 and free_bits >= 0. Received: "
                f"iw_k={iw_k}, kl_warmup_steps={kl_warmup_steps}, free_bits={free_bits}"
            )
        if int(num_classes) < 0 or (int(num_classes) and prior == "vamp"):
            raise UsageError(
                "Invalid value received for argument `num_classes`. Expected an integer "
                ">= 0, and no VampPrior for a conditional model. Received: "
                f"num_classes={num_classes}, prior={prior!r}"
            )
        if float(free_bits) > 0 and prior != "standard_normal":
            raise UsageError(
                "`free_bits` needs a per-dimension KL, which only the standard_normal "
                f"prior has. Received: prior={prior!r}, free_bits={free_bits}"
            )
        if int(latent_dim) < 1:
            raise UsageError(
                "Invalid value received for argument `latent_dim`. Expected a "
                f"positive integer. Received: latent_dim={latent_dim}"
            )
        if float(beta) < 0:
            raise UsageError(
                "Invalid value received for argument `beta`. Expected a float "
                f">= 0. Received: beta={beta}"
            )
        # === Config ===
        self.image_shape = tuple(int(d) for d in image_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.prior = prior
        self.beta = float(beta)
        self.base_filters = int(base_filters)
        self.seed = seed
        self.objective = objective
        self.iw_k = int(iw_k)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.prior_components = prior_components
        self.num_classes = int(num_classes)
        self.architecture = architecture
        self.hidden_units = int(hidden_units)
        self.pseudo_inputs = pseudo_inputs
        self._likelihood = likelihoods.get_likelihood(likelihood)

        # === Layers ===
        # The networks follow this model's policy, not the global one, so a
        # reloaded mixed-precision model computes the way it was trained.
        width = getattr(self, self._architecture.width_argument)
        self.encoder = encoder or self._architecture.build_encoder(
            self.image_shape, self.latent_dim, width, self.num_classes, dtype=self.dtype_policy
        )
        self.decoder = decoder or self._architecture.build_decoder(
            self.image_shape,
            self.latent_dim,
            self._likelihood.params_per_channel,
            width,
            self.num_classes,
            dtype=self.dtype_policy,
        )
        self.prior_layer = prior_layer or priors.get_prior(
            prior, self.latent_dim, self.image_shape, prior_components, pseudo_inputs
        )
        if hasattr(self.prior_layer, "bind"):  # the VampPrior encodes pseudo-inputs
            self.prior_layer.bind(self.encode_top)
        self._build_level_networks(width, level_networks or {})
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        # Every sub-network is functional and already built; marking the model
        # built means `.keras` reloads keep optimizer state, BackupAndRestore
        # works and export can trace, without a dummy forward pass.
        self.build()

    def _build_level_networks(self, width, shared: dict) -> None:
        """Builds (or takes from `shared`) the networks of further levels: none here."""
        if shared:
            raise UsageError(f"A one-level VAE has no networks {sorted(shared)}.")

    @classmethod
    def class_for(cls, config: dict) -> type:
        """The model class of a config: `VAE`, or `HVAE` for a two-level architecture."""
        levels = networks.get_architecture(config.get("architecture", "conv")).levels
        if levels not in VAE._classes_by_levels:  # keras_vae/__init__ imports every class
            raise UsageError(f"No model class for {levels} levels: import keras_vae.hvae.")
        return VAE._classes_by_levels[levels]

    @property
    def code_dim(self) -> int:
        """Size of the code z that `encode`, `decode` and the exports use:
        `latent_dim` here, both levels' latents for a two-level model."""
        return self.latent_dim

    @property
    def code_prior_is_standard_normal(self) -> bool:
        """Whether the code's prior is N(0, I), so that KL(q(z_u|x) || N(0, 1))
        per dimension is the KL to the prior and its quantiles are the prior's."""
        return self.prior == "standard_normal"

    def build(self, input_shape=None):
        if not self.prior_layer.built:  # a prior shared by `with_decoder` is built
            self.prior_layer.build(None)
        self.built = True

    # --- distributions ---------------------------------------------------

    def one_hot(self, labels):
        """Labels -> one-hot `(batch, num_classes)`, or None for an unconditional VAE.

        Raises:
            ValueError: a conditional VAE without labels, or (eagerly) a label
                outside [0, num_classes).
        """
        if not self.num_classes:
            return None
        if labels is None:
            raise UsageError(
                f"This VAE is conditional (num_classes={self.num_classes}): pass `labels`, "
                "integers in [0, num_classes), one per image."
            )
        labels = tf.cast(labels, tf.int32)
        if tf.executing_eagerly() and tf.size(labels) > 0:
            low, high = int(tf.reduce_min(labels)), int(tf.reduce_max(labels))
            if low < 0 or high >= self.num_classes:
                raise UsageError(
                    f"Label out of range: expected integers in [0, {self.num_classes}). "
                    f"Received: labels from {low} to {high}"
                )
        return tf.one_hot(labels, self.num_classes)

    def _with_condition(self, tensor, one_hot):
        # Keras refuses a list that mixes numpy arrays and tensors.
        return tensor if one_hot is None else [tf.convert_to_tensor(tensor), one_hot]

    def encode(self, images, training=False, labels=None):
        """Images `(batch, H, W, C)` in [0, 1] -> posterior `(mean, log_var)`.

        Both are float32 `(batch, latent_dim)`, whatever the compute dtype.
        """
        inputs = self._with_condition(images, self.one_hot(labels))
        return self._gaussian_params(self.encoder(inputs, training=training))

    def _gaussian_params(self, params):
        """A network's `(batch, 2 * latent_dim)` output -> float32 `(mean, log_var)`,
        the log-variance clipped to the architecture's range."""
        mean, raw_log_var = tf.split(tf.cast(params, tf.float32), 2, axis=-1)
        return mean, tf.clip_by_value(raw_log_var, *self._architecture.log_var_range)

    def encode_top(self, images, training=False, labels=None):
        """The posterior of the level the prior is on: `encode` here; the
        VampPrior encodes its pseudo-inputs with it."""
        return self.encode(images, training, labels)

    def posterior(self, mean, log_var) -> tfd.Distribution:
        """q(z|x) as a TFP `MultivariateNormalDiag` over `(latent_dim,)`."""
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(0.5 * log_var))

    def prior_distribution(self) -> tfd.Distribution:
        return self.prior_layer.distribution()

    def likelihood_distribution(self, z, training=False, labels=None) -> tfd.Distribution:
        """p(x|z): a TFP distribution with event shape `image_shape`."""
        inputs = self._with_condition(z, self.one_hot(labels))
        return self._likelihood.distribution(self.decoder(inputs, training=training))

    def decode(self, z, training=False, labels=None) -> dict:
        """Latents `(batch, latent_dim)` -> `{"mean", "logits"}`.

        `mean` is the likelihood's pixel mean (probabilities for Bernoulli),
        `logits` the decoder's raw likelihood parameters, both float32.
        """
        inputs = self._with_condition(z, self.one_hot(labels))
        params = tf.cast(self.decoder(inputs, training=training), tf.float32)
        return {"mean": self._likelihood.distribution(params).mean(), "logits": params}

    def kl_divergence(self, posterior, z):
        """KL(q || p) per image: analytic where TFP has it, else one sample."""
        prior = self.prior_distribution()
        try:
            return tfd.kl_divergence(posterior, prior)
        except NotImplementedError:
            return posterior.log_prob(z) - prior.log_prob(z)

    def next_seed(self):
        """A stateless seed, different for every call and every replica."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(seed, replica_id)

    # --- per-image quantities used by training, evaluation and export -----

    def negative_elbo(self, images, sample=True, training=False, labels=None) -> dict:
        """Per-image negative ELBO and its two terms, in nats.

        Args:
            images: float tensor `(batch, H, W, C)` in the likelihood's range.
            sample: bool. `True` draws z from the posterior (the training
                estimator); `False` decodes the posterior mean, which makes
                the result deterministic (the anomaly score). Defaults to
                `True`.
            training: bool. Passed to the networks.
            labels: int `(batch,)`; required by a conditional VAE.

        Returns:
            dict of float32 `(batch,)` tensors: `loss`, `reconstruction`, `kl`.
        """
        return self._elbo_terms(images, sample, training, labels)[0]

    def _elbo_terms(self, images, sample, training, labels):
        """`negative_elbo`'s terms and the posterior parameters `(mean, log_var)`."""
        images = tf.cast(images, tf.float32)
        mean, log_var = self.encode(images, training, labels)
        posterior = self.posterior(mean, log_var)
        z = posterior.sample(seed=self.next_seed()) if sample else mean
        reconstruction = -self.likelihood_distribution(z, training, labels).log_prob(images)
        kl = self.kl_divergence(posterior, z)
        terms = {"loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}
        if self.free_bits:  # closed form against N(0, I), per dimension
            terms["kl_per_dim"] = 0.5 * (tf.exp(log_var) + mean**2 - 1.0 - log_var)
        return terms, (mean, log_var)

    def code_from_noise(self, noise, uniform=None) -> dict:
        """A prior sample as a function of its randomness: `{"z": code, ...}`
        from standard normal `noise` `(batch, code_dim)` (and `uniform`, which
        a mixture prior uses to pick its component). What the exports use."""
        return self.prior_layer.from_noise(noise, uniform)

    def reconstruct(self, images, labels=None):
        """Images -> the likelihood mean decoded from the posterior mean."""
        mean, _ = self.encode(images, labels=labels)
        return self.decode(mean, labels=labels)["mean"]

    def sample_prior(self, num_samples: int | None = None, labels=None):
        """Latents from the prior and their decoded means.

        An unconditional VAE draws `num_samples`; a conditional one draws one
        item per entry of `labels` ("new ankle boots": `labels=[9] * 16`).
        """
        if self.num_classes and labels is not None:
            num_samples = int(tf.size(labels))
        z = self.prior_distribution().sample(num_samples, seed=self.next_seed())
        return {"z": z, "images": self.decode(z, labels=labels)["mean"]}

    def call(self, inputs, training=False):
        """Images, or `(images, labels)` -> the reconstruction (a tensor)."""
        images, labels = _split(inputs)
        mean, _ = self.encode(images, training, labels)
        return self.decode(mean, training, labels)["mean"]

    # --- Keras training loop ---------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update_metrics(self, terms):
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name])
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 + MultiWorkerMirroredStrategy fails to reduce scalar
            # logs ("Invalid reduction dimension 0", tensorflow#72388).
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def kl_weight(self):
        """beta, ramped linearly from 0 over `kl_warmup_steps` optimizer steps."""
        if not self.kl_warmup_steps:
            return tf.constant(self.beta)
        progress = tf.cast(self.optimizer.iterations, tf.float32) / self.kl_warmup_steps
        return self.beta * tf.minimum(1.0, progress)

    def log_importance_weights(self, images, num_samples, labels=None):
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k samples: `(k, batch)`."""
        images = tf.cast(images, tf.float32)
        mean, log_var = self.encode(images, False, labels)
        return self._log_weights(images, mean, log_var, num_samples, labels=labels)

    def _log_weights(self, images, mean, log_var, num_samples, training=False, labels=None):
        posterior = self.posterior(mean, log_var)
        z = posterior.sample(num_samples, seed=self.next_seed())  # (k, batch, latent)
        flat = tf.reshape(z, [-1, self.latent_dim])  # (k * batch, latent)
        tiled, labels = tile_samples(images, labels, num_samples)
        log_px = self.likelihood_distribution(flat, training, labels).log_prob(tiled)
        log_px = tf.reshape(log_px, [num_samples, -1])
        return log_px + self.prior_distribution().log_prob(z) - posterior.log_prob(z)

    def _objective(self, images, terms, posterior_params, labels=None):
        """Per-example training objective (nats) for the configured options."""
        if self.objective == "iwae":
            images = tf.cast(images, tf.float32)
            mean, log_var = posterior_params  # the step's one encoding
            weights = self._log_weights(images, mean, log_var, self.iw_k, True, labels)
            return -(tf.reduce_logsumexp(weights, axis=0) - tf.math.log(float(self.iw_k)))
        kl = terms["kl"]
        if self.free_bits:
            per_dim = terms["kl_per_dim"]  # (batch, latent)
            floored = tf.maximum(tf.reduce_mean(per_dim, axis=0), self.free_bits)
            kl = tf.broadcast_to(tf.reduce_sum(floored), tf.shape(kl))  # batch-level floor
        return terms["reconstruction"] + self.kl_weight() * kl

    def train_step(self, data):
        images, labels = _split(data)
        with tf.GradientTape() as tape:
            terms, posterior_params = self._elbo_terms(images, True, True, labels)
            objective = self._objective(images, terms, posterior_params, labels)
            # Mean over the *global* batch: Keras sums gradients over replicas.
            loss = tf.nn.compute_average_loss(objective)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        return self._update_metrics(terms)

    def test_step(self, data):
        images, labels = _split(data)
        return self._update_metrics(self.negative_elbo(images, sample=True, labels=labels))

    # Constructor arguments that are objects, not hyperparameters: not in the config.
    _INJECTED = ("encoder", "decoder", "prior_layer", "level_networks")

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        """The constructor's hyperparameter names: the one list behind `get_config`,
        `training.build_model` and the `TrainConfig` fields of the same names."""
        names = inspect.signature(VAE.__init__).parameters
        return tuple(n for n in names if n not in ("self", "kwargs", *cls._INJECTED))

    def get_config(self):
        config = {name: getattr(self, name) for name in self.hyperparameters()}
        return {**super().get_config(), **config, "image_shape": list(self.image_shape)}

    # --- presets -----------------------------------------------------------

    @classmethod
    def from_preset(cls, preset: str) -> VAE:
        """A pretrained model: a shipped preset's name or a preset folder.

        `keras_vae.presets.available()` lists the shipped names;
        `presets.read(preset)[2]` is its metadata (data, command, figures).

        Raises:
            UsageError: an unknown name (listing the shipped ones), a folder
                that is not a preset, or weights that do not match the config.
        """
        config, weights, _ = presets.read(preset)
        model = VAE.class_for(config).from_config(config)
        try:
            with warnings.catch_warnings():
                # Keras warns, and keeps fresh weights, where a nested layer is
                # missing from the file: for a preset that is a mismatch too.
                warnings.simplefilter("error", UserWarning)
                model.load_weights(weights)
        except (ValueError, KeyError, OSError, UserWarning) as e:
            raise UsageError(
                f"Preset {preset}: its {presets.WEIGHTS_FILE} does not match its "
                f"{presets.CONFIG_FILE} ({e}). Write the preset again with "
                "VAE.save_to_preset from the model that trained the weights."
            ) from None
        return model

    def save_to_preset(
        self,
        preset_dir: str,
        metadata: dict | None = None,
        extra=(),
        weights_dtype: str = "float32",
    ) -> str:
        """Writes this model as a preset folder (config, weights, `metadata`,
        and `extra` files such as the run's GMM sampler) that `from_preset` reads.

        `weights_dtype="float16"` stores the weights at half the size; the
        loaded model computes in float32 with the weights rounded to float16
        (`presets.rounded`); measure it with those weights."""
        # The weights alone: a copy without an optimizer, whose state a model's
        # own save_weights would include (twice the weights again, for Adam).
        bare = type(self).from_config(self.get_config())
        bare.set_weights(presets.rounded(self.get_weights(), weights_dtype))  # checks the range
        return presets.write(
            preset_dir, self.get_config(), bare.save_weights, metadata or {}, extra, weights_dtype
        )

    def with_decoder(self, decoder: keras.Model) -> VAE:
        """This model with `decoder` in place of its own: the supported seam for
        another form of the same decoder function (`keras_vae.decoder_forms`).

        The encoder and the prior are shared, not copied, so the new model
        follows this one's training; `decoder` may share weights too.
        """
        return type(self)(
            **{k: v for k, v in self.get_config().items() if k not in ("name", "trainable")},
            **{**self._shared_networks(), "decoder": decoder},
        )

    def _shared_networks(self) -> dict:
        """The constructor arguments that share this model's networks and prior."""
        return {"encoder": self.encoder, "decoder": self.decoder, "prior_layer": self.prior_layer}


VAE._classes_by_levels[VAE.levels] = VAE


def tile_samples(images, labels, num_samples):
    """Images `(batch, ...)` -> `(k * batch, ...)`, sample-major, the way
    `sample(k)` lays out latents; labels likewise (or None)."""
    tiled = tf.reshape(
        tf.broadcast_to(images[None], tf.concat([[num_samples], tf.shape(images)], 0)),
        tf.concat([[-1], tf.shape(images)[1:]], 0),
    )
    if labels is not None:  # the same label for each of an image's k samples
        labels = tf.reshape(tf.tile(tf.reshape(labels, [1, -1]), [num_samples, 1]), [-1])
    return tiled, labels


def _split(data):
    """(images, labels or None) of a batch: images, (images, labels) or a dict."""
    if isinstance(data, dict):
        return data["image"], data.get("label")
    if isinstance(data, (tuple, list)):
        return data[0], (data[1] if len(data) > 1 else None)
    return data, None
