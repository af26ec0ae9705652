"""The `VAE` model: a Keras `Model` whose distributions are TFP's.

Example:

```python
import keras_vae
vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16)
vae.compile(optimizer="adam")
vae.fit(images, epochs=5)  # images: float32 in [0, 1], (N, 28, 28, 1)
neg_elbo = vae.negative_elbo(images[:8])["loss"]  # (8,) nats per image
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

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import likelihoods, networks, priors

tfd = tfp.distributions

# Log-variance bounds: exp(-10) to exp(10) spans every useful posterior scale
# and keeps exp() and its gradient finite in float32.
LOG_VAR_MIN, LOG_VAR_MAX = -10.0, 10.0

METRIC_NAMES = ("loss", "reconstruction", "kl")


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """A convolutional variational autoencoder.

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
        base_filters: int. Filters of the first convolution; each stage
            doubles it. Defaults to `32`.
        seed: int or None. Seed of the sampling noise. Defaults to `None`.
    """

    def __init__(
        self,
        image_shape=(28, 28, 1),
        latent_dim=16,
        likelihood="bernoulli",
        prior="standard_normal",
        beta=1.0,
        base_filters=32,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(latent_dim) < 1:
            raise ValueError(
                "Invalid value received for argument `latent_dim`. Expected a "
                f"positive integer. Received: latent_dim={latent_dim}"
            )
        if float(beta) < 0:
            raise ValueError(
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
        self._likelihood = likelihoods.get_likelihood(likelihood)

        # === Layers ===
        self.encoder = networks.build_encoder(self.image_shape, self.latent_dim, self.base_filters)
        self.decoder = networks.build_decoder(
            self.image_shape,
            self.latent_dim,
            self._likelihood.params_per_channel,
            self.base_filters,
        )
        self.prior_layer = priors.get_prior(prior, self.latent_dim)
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        # Every sub-network is functional and already built; marking the model
        # built means `.keras` reloads keep optimizer state, BackupAndRestore
        # works and export can trace, without a dummy forward pass.
        self.build()

    def build(self, input_shape=None):
        self.prior_layer.build(None)
        self.built = True

    # --- distributions ---------------------------------------------------

    def encode(self, images, training=False):
        """Images `(batch, H, W, C)` in [0, 1] -> posterior `(mean, log_var)`.

        Both are float32 `(batch, latent_dim)`, whatever the compute dtype.
        """
        params = tf.cast(self.encoder(images, training=training), tf.float32)
        mean, raw_log_var = tf.split(params, 2, axis=-1)
        log_var = tf.clip_by_value(raw_log_var, LOG_VAR_MIN, LOG_VAR_MAX)
        return mean, log_var

    def posterior(self, mean, log_var) -> tfd.Distribution:
        """q(z|x) as a TFP `MultivariateNormalDiag` over `(latent_dim,)`."""
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(0.5 * log_var))

    def prior_distribution(self) -> tfd.Distribution:
        return self.prior_layer.distribution()

    def likelihood_distribution(self, z, training=False) -> tfd.Distribution:
        """p(x|z): a TFP distribution with event shape `image_shape`."""
        return self._likelihood.distribution(self.decoder(z, training=training))

    def decode(self, z, training=False) -> dict:
        """Latents `(batch, latent_dim)` -> `{"mean", "logits"}`.

        `mean` is the likelihood's pixel mean (probabilities for Bernoulli),
        `logits` the decoder's raw likelihood parameters, both float32.
        """
        params = tf.cast(self.decoder(z, training=training), tf.float32)
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

    def negative_elbo(self, images, sample=True, training=False) -> dict:
        """Per-image negative ELBO and its two terms, in nats.

        Args:
            images: float tensor `(batch, H, W, C)` in the likelihood's range.
            sample: bool. `True` draws z from the posterior (the training
                estimator); `False` decodes the posterior mean, which makes
                the result deterministic (the anomaly score). Defaults to
                `True`.
            training: bool. Passed to the networks.

        Returns:
            dict of float32 `(batch,)` tensors: `loss`, `reconstruction`, `kl`.
        """
        images = tf.cast(images, tf.float32)
        mean, log_var = self.encode(images, training=training)
        posterior = self.posterior(mean, log_var)
        z = posterior.sample(seed=self.next_seed()) if sample else mean
        reconstruction = -self.likelihood_distribution(z, training).log_prob(images)
        kl = self.kl_divergence(posterior, z)
        return {"loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}

    def reconstruct(self, images):
        """Images -> the likelihood mean decoded from the posterior mean."""
        mean, _ = self.encode(images)
        return self.decode(mean)["mean"]

    def sample_prior(self, num_samples: int):
        """`num_samples` latents from the prior and their decoded means."""
        z = self.prior_distribution().sample(num_samples, seed=self.next_seed())
        return {"z": z, "images": self.decode(z)["mean"]}

    def call(self, images, training=False):
        """Returns the reconstruction (a tensor, never a distribution)."""
        mean, _ = self.encode(images, training=training)
        return self.decode(mean, training=training)["mean"]

    # --- Keras training loop ---------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update_metrics(self, terms):
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        images = _images(data)
        with tf.GradientTape() as tape:
            terms = self.negative_elbo(images, sample=True, training=True)
            objective = terms["reconstruction"] + self.beta * terms["kl"]
            # Mean over the *global* batch: Keras sums gradients over replicas.
            loss = tf.nn.compute_average_loss(objective)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        return self._update_metrics(terms)

    def test_step(self, data):
        return self._update_metrics(self.negative_elbo(_images(data), sample=True))

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "prior": self.prior,
            "beta": self.beta,
            "base_filters": self.base_filters,
            "seed": self.seed,
        }


def _images(data):
    """The images of a batch that is images, (images, labels) or a dict."""
    if isinstance(data, dict):
        return data["image"]
    if isinstance(data, (tuple, list)):
        return data[0]
    return data
