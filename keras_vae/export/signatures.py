"""The serving signatures, shared by the SavedModel and the TFLite files.

Every signature takes a dynamic batch, has named inputs and outputs, returns
plain tensors (never TFP objects) and uses only core TF ops, so it
converts to TFLite builtins. Sampling uses the stateful `RandomStandardNormal`
op with no seed, so every fresh load draws new samples.

| signature | inputs | outputs |
|---|---|---|
| `serving_default` (encode) | `images` uint8 (batch, H, W, C) | `z_mean`, `z_log_var`, `z` |
| `decode` | `z` float32 (batch, latent) | `mean` (pixel means/probabilities), `logits` |
| `reconstruct` | `images` uint8 | `reconstruction` (decoded posterior mean) |
| `generate` | `count` int32 scalar | `images`, `z` |
| `generate_from_noise` | `noise` float32 (batch, latent), N(0, I) | `images`, `z` |
| ... (mixture prior) | `noise`, `uniform` float32 (batch,) in [0, 1) | `images`, `z`, `component` |
| `score` | `images` uint8 | `negative_elbo`, `reconstruction`, `kl` (nats, deterministic) |
| `generate_gmm` (with a fitted GMM sampler) | `count` int32 scalar | `images`, `z`, `component` |

A conditional model's signatures also take `labels` (int32, one per image);
its `generate` and `generate_gmm` take `labels` instead of `count` (one image
per label). `generate_gmm` draws z from the run's GMM sampler
(`keras_vae.samplers`), whose mixture is baked into the graph as constants. With a
mixture prior (`mixture`, `vamp`), `z = loc_c + scale_c * noise`, where the
component `c` is picked by `uniform` through the inverse CDF of the mixture
weights: the same distribution as `model.prior_distribution().sample()`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae.data import to_unit_interval
from keras_vae.priors import portable_densities

SIGNATURE_NAMES = (
    "serving_default",
    "decode",
    "reconstruct",
    "generate",
    "generate_from_noise",
    "score",
)


def signature_names(gmm=None) -> tuple:
    """The signatures an export has: `SIGNATURE_NAMES`, plus `generate_gmm` with a GMM."""
    return SIGNATURE_NAMES + (("generate_gmm",) if gmm is not None else ())


def signature_functions(model, gmm=None) -> dict:
    """name -> (fn, input_signature) for every signature of `model`.

    Args:
        model: a `keras_vae.VAE`.
        gmm: a `keras_vae.samplers.GaussianMixtureSampler` or None. Adds the
            `generate_gmm` signature.
    """
    images_spec = keras.InputSpec(shape=(None, *model.image_shape), dtype="uint8")
    latent_spec = keras.InputSpec(shape=(None, model.code_dim), dtype="float32")
    labels_spec = keras.InputSpec(shape=(None,), dtype="int32")
    uniform_spec = keras.InputSpec(shape=(None,), dtype="float32")

    # `labels` is None for an unconditional model; a conditional one's
    # signatures take it as a last input (one int32 class per image).
    def encode(images, labels=None):
        z_mean, z_log_var = model.encode(to_unit_interval(images), labels=labels)
        noise = tf.random.normal(tf.shape(z_mean))
        return {
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z_mean + tf.exp(0.5 * z_log_var) * noise,
        }

    def decode(z, labels=None):
        return model.decode(z, labels=labels)

    def reconstruct(images, labels=None):
        return {"reconstruction": model.reconstruct(to_unit_interval(images), labels)}

    def decoded(drawn, labels):
        return {"images": model.decode(drawn["z"], labels=labels)["mean"], **drawn}

    # The same function under the two input lists a prior can declare (the
    # signature's input names are the Python argument names).
    def generate_from_noise(noise, labels=None):
        return decoded(model.code_from_noise(noise), labels)

    def generate_from_mixture_noise(noise, uniform, labels=None):
        return decoded(model.code_from_noise(noise, uniform), labels)

    def generate_for(count, labels=None, source=None):
        noise = tf.random.normal(tf.stack([count, model.code_dim]))
        uniform = tf.random.uniform([count])
        if source is None:  # the prior (through both levels of a two-level model)
            return decoded(model.code_from_noise(noise, uniform), labels)
        return decoded(source.from_noise(noise, uniform), labels)

    def generate(count):
        return generate_for(count)

    def generate_for_labels(labels):
        return generate_for(tf.size(labels), labels)

    def generate_gmm(count):
        return generate_for(count, source=gmm)

    def generate_gmm_for_labels(labels):
        return generate_for(tf.size(labels), labels, source=gmm)

    def score(images, labels=None):
        with portable_densities():  # a mixture prior's density without float64 ops
            terms = model.negative_elbo(to_unit_interval(images), sample=False, labels=labels)
        return {
            "negative_elbo": terms["loss"],
            "reconstruction": terms["reconstruction"],
            "kl": terms["kl"],
        }

    # The prior declares what its noise is; each declaration has its function.
    from_noise = {
        ("noise",): (generate_from_noise, [latent_spec]),
        ("noise", "uniform"): (generate_from_mixture_noise, [latent_spec, uniform_spec]),
    }[tuple(model.prior_layer.noise_inputs)]
    functions = {
        "serving_default": (encode, [images_spec]),
        "decode": (decode, [latent_spec]),
        "reconstruct": (reconstruct, [images_spec]),
        "generate": (generate, [keras.InputSpec(shape=(), dtype="int32")]),
        "generate_from_noise": from_noise,
        "score": (score, [images_spec]),
    }
    if gmm is not None:
        functions["generate_gmm"] = (generate_gmm, [keras.InputSpec(shape=(), dtype="int32")])
    if model.num_classes:
        functions = {name: (fn, [*spec, labels_spec]) for name, (fn, spec) in functions.items()}
        functions["generate"] = (generate_for_labels, [labels_spec])
        if gmm is not None:
            functions["generate_gmm"] = (generate_gmm_for_labels, [labels_spec])
    return functions
