"""`HVAE`: the two-level VAE of the VampPrior paper (HVAE, and ConvHVAE with
gated convolutions; Tomczak & Welling 2018, jmtomczak/vae_vampprior).

Example:

```python
from keras_vae.hvae import HVAE
model = HVAE(architecture="hvae", latent_dim=40)  # z1 = z2 = 40
model.compile(optimizer="adam")
```

#### Mathematical details

z2 is the top level, with the prior p(z2) (any registered prior); z1 sits
below it:

    q(z1, z2 | x) = q(z2 | x) q(z1 | x, z2)
    p(x, z1, z2)  = p(x | z1, z2) p(z1 | z2) p(z2)

all diagonal Gaussians but p(z2) and the likelihood. With one sample
z2 ~ q(z2|x), z1 ~ q(z1|x,z2):

    -ELBO(x) = -log p(x|z1,z2) + KL(q(z1|x,z2) || p(z1|z2)) + KL(q(z2|x) || p(z2))

The z1 term is the closed-form KL between the two diagonal Gaussians given
the sampled z2 (an unbiased estimate of its expectation, with less variance
than the paper's log-ratio); the z2 term is analytic for the standard normal
prior and a one-sample Monte Carlo estimate for the others, as in `VAE`.
The importance-weighted bound draws K pairs (z2_k, z1_k) from q and weighs
each by p(x|z1_k,z2_k) p(z1_k|z2_k) p(z2_k) / (q(z2_k|x) q(z1_k|x,z2_k)):
it is a bound on log p(x) over both latents.

Outside the model the two levels are one code z = concat([z1, z2]) of
`code_dim = 2 * latent_dim`: `encode` returns the code's posterior at the
means (z1's given z2 = its mean), `decode` and the exported signatures take
the code, and `code_from_noise` maps standard normal noise to a sample of
p(z1|z2) p(z2).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae.errors import UsageError
from keras_vae.networks import z1_encoder_parts
from keras_vae.vae import VAE, tile_samples


@keras.saving.register_keras_serializable(package="keras_vae")
class HVAE(VAE):
    """A two-level VAE: `VAE`'s arguments, with `architecture="hvae"` (gated
    MLP) or `"conv_hvae"` (gated convolutions), and `latent_dim` the size of
    each level (the paper's z1 = z2 = 40).

    Not conditional, and without `free_bits`: both are refused.

    Args:
        encoder_z1, prior_z1: `keras.Model` or None. Networks to share
            instead of building q(z1|x,z2) and p(z1|z2) (see `with_decoder`).
        **kwargs: `VAE`'s arguments.
    """

    levels = 2

    def __init__(self, *args, architecture="hvae", encoder_z1=None, prior_z1=None, **kwargs):
        if int(kwargs.get("num_classes", 0)):
            raise UsageError(
                f"architecture={architecture!r} (two levels) is not conditional. Received: "
                f"num_classes={kwargs['num_classes']}. Use `--architecture gated_mlp` or "
                "`conv` for a conditional model."
            )
        if float(kwargs.get("free_bits", 0.0)):
            raise UsageError(
                f"architecture={architecture!r}: `free_bits` needs a per-dimension KL to "
                "N(0, I), which a two-level model's z1 does not have. Received: "
                f"free_bits={kwargs['free_bits']}"
            )
        shared = {"encoder_z1": encoder_z1, "prior_z1": prior_z1}
        super().__init__(*args, architecture=architecture, level_networks=shared, **kwargs)

    def _build_level_networks(self, width, shared: dict) -> None:
        arch = self._architecture
        self.encoder_z1 = shared.get("encoder_z1") or arch.build_z1_encoder(
            self.image_shape, self.latent_dim, width, dtype=self.dtype_policy
        )
        self.prior_z1 = shared.get("prior_z1") or arch.build_z1_prior(
            self.latent_dim, dtype=self.dtype_policy
        )

    @property
    def code_dim(self) -> int:
        return 2 * self.latent_dim

    @property
    def code_prior_is_standard_normal(self) -> bool:
        return False  # z1's prior is p(z1|z2)

    # --- the two levels ----------------------------------------------------

    def encode_top(self, images, training=False, labels=None):
        """q(z2|x): `(mean, log_var)`, float32 `(batch, latent_dim)` each."""
        del labels
        return self._gaussian_params(self.encoder(images, training=training))

    def encode_z1(self, images, z2, training=False):
        """q(z1|x,z2): `(mean, log_var)`."""
        inputs = [tf.convert_to_tensor(images), tf.convert_to_tensor(z2)]
        return self._gaussian_params(self.encoder_z1(inputs, training=training))

    def prior_z1_params(self, z2, training=False):
        """p(z1|z2): `(mean, log_var)`."""
        return self._gaussian_params(self.prior_z1(tf.convert_to_tensor(z2), training=training))

    def encode(self, images, training=False, labels=None):
        """Images -> the code's posterior `(mean, log_var)`, `(batch, 2 * latent_dim)`:
        z1's part is q(z1|x, z2) at z2 = the mean of q(z2|x)."""
        del labels  # not conditional
        images = tf.cast(images, tf.float32)
        mean2, log_var2 = self.encode_top(images, training)
        mean1, log_var1 = self.encode_z1(images, mean2, training)
        return tf.concat([mean1, mean2], -1), tf.concat([log_var1, log_var2], -1)

    def code_from_noise(self, noise, uniform=None) -> dict:
        """`noise` `(batch, 2 * latent_dim)`: its first half draws z1 from
        p(z1|z2), its second half z2 from the prior (with `uniform`)."""
        noise = tf.convert_to_tensor(noise, tf.float32)
        noise1, noise2 = noise[:, : self.latent_dim], noise[:, self.latent_dim :]
        top = self.prior_layer.from_noise(noise2, uniform)
        mean1, log_var1 = self.prior_z1_params(top["z"])
        z1 = mean1 + tf.exp(0.5 * log_var1) * noise1
        return {**top, "z": tf.concat([z1, top["z"]], -1)}

    def sample_prior(self, num_samples: int | None = None, labels=None):
        del labels
        z2 = self.prior_distribution().sample(num_samples, seed=self.next_seed())
        mean1, log_var1 = self.prior_z1_params(z2)
        z1 = self.posterior(mean1, log_var1).sample(seed=self.next_seed())
        z = tf.concat([z1, z2], -1)
        return {"z": z, "images": self.decode(z)["mean"]}

    # --- per-image quantities ------------------------------------------------

    def _elbo_terms(self, images, sample, training, labels):
        """`negative_elbo`'s terms and q(z2|x)'s parameters (what the IWAE
        objective samples from)."""
        del labels
        images = tf.cast(images, tf.float32)
        mean2, log_var2 = self.encode_top(images, training)
        q2 = self.posterior(mean2, log_var2)
        z2 = q2.sample(seed=self.next_seed()) if sample else mean2
        mean1, log_var1 = self.encode_z1(images, z2, training)
        q1 = self.posterior(mean1, log_var1)
        z1 = q1.sample(seed=self.next_seed()) if sample else mean1
        p1 = self.posterior(*self.prior_z1_params(z2, training))
        code = tf.concat([z1, z2], -1)
        reconstruction = -self.likelihood_distribution(code, training).log_prob(images)
        kl = q1.kl_divergence(p1) + self.kl_divergence(q2, z2)
        terms = {"loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}
        return terms, (mean2, log_var2)

    def log_importance_weights(self, images, num_samples, labels=None):
        """log p(x,z1,z2) - log q(z1,z2|x) for K samples of both levels: `(K, batch)`."""
        del labels
        images = tf.cast(images, tf.float32)
        mean2, log_var2 = self.encode_top(images)
        return self._log_weights(images, mean2, log_var2, num_samples)

    def _log_weights(self, images, mean, log_var, num_samples, training=False, labels=None):
        q2 = self.posterior(mean, log_var)
        z2 = q2.sample(num_samples, seed=self.next_seed())  # (k, batch, latent)
        flat2 = tf.reshape(z2, [-1, self.latent_dim])  # (k * batch, latent)
        tiled, _ = tile_samples(images, None, num_samples)
        q1 = self.posterior(*self._encode_z1_samples(images, flat2, num_samples, training))
        z1 = q1.sample(seed=self.next_seed())
        p1 = self.posterior(*self.prior_z1_params(flat2, training))
        code = tf.concat([z1, flat2], -1)
        log_px = self.likelihood_distribution(code, training).log_prob(tiled)
        level1 = tf.reshape(log_px + p1.log_prob(z1) - q1.log_prob(z1), [num_samples, -1])
        return level1 + self.prior_distribution().log_prob(z2) - q2.log_prob(z2)

    def _encode_z1_samples(self, images, z2, num_samples, training=False):
        """q(z1|x,z2) for `num_samples` samples of z2 per image (`z2` `(k * batch,
        latent)`, sample-major): the image part of the network runs once per image."""
        parts = z1_encoder_parts(self.encoder_z1)
        if parts is None:  # a network of another layout
            return self._encode_z1_tiled(images, z2, num_samples, training)
        features, head = parts
        tiled, _ = tile_samples(features(images, training=training), None, num_samples)
        return self._gaussian_params(head([tiled, tf.convert_to_tensor(z2)], training=training))

    def _encode_z1_tiled(self, images, z2, num_samples, training=False):
        """`_encode_z1_samples` the plain way, for any network: the whole of
        q(z1|x,z2) on `num_samples` tiled copies of each image."""
        return self.encode_z1(tile_samples(images, None, num_samples)[0], z2, training)

    def _shared_networks(self) -> dict:
        shared = {"encoder_z1": self.encoder_z1, "prior_z1": self.prior_z1}
        return {**super()._shared_networks(), **shared}
