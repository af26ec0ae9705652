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

A conditional model's signatures also take `labels` (int32, one per image);
its `generate` takes `labels` instead of `count` (one image per label). With a
mixture prior (`mixture`, `vamp`), `z = loc_c + scale_c * noise`, where the
component `c` is picked by `uniform` through the inverse CDF of the mixture
weights: the same distribution as `model.prior_distribution().sample()`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae.data import to_unit_interval

SIGNATURE_NAMES = (
    "serving_default",
    "decode",
    "reconstruct",
    "generate",
    "generate_from_noise",
    "score",
)


def signature_functions(model) -> dict:
    """name -> (fn, input_signature) for every signature of `model`."""
    images_spec = keras.InputSpec(shape=(None, *model.image_shape), dtype="uint8")
    latent_spec = keras.InputSpec(shape=(None, model.latent_dim), dtype="float32")
    labels_spec = keras.InputSpec(shape=(None,), dtype="int32")
    uniform_spec = keras.InputSpec(shape=(None,), dtype="float32")
    mixture = model.prior_layer.is_mixture

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

    def generate_from_noise(noise, labels=None):
        z = model.prior_layer.from_noise(noise)  # the standard normal prior: z = noise
        return {"images": model.decode(z, labels=labels)["mean"], "z": z}

    def generate_from_mixture_noise(noise, uniform, labels=None):
        z, component = model.prior_layer.from_noise(noise, uniform)
        return {"images": model.decode(z, labels=labels)["mean"], "z": z, "component": component}

    def generate_for(count, labels=None):
        noise = tf.random.normal(tf.stack([count, model.latent_dim]))
        if mixture:
            return generate_from_mixture_noise(noise, tf.random.uniform([count]), labels)
        return generate_from_noise(noise, labels)

    def generate(count):
        return generate_for(count)

    def generate_for_labels(labels):
        return generate_for(tf.size(labels), labels)

    def score(images, labels=None):
        terms = model.negative_elbo(to_unit_interval(images), sample=False, labels=labels)
        return {
            "negative_elbo": terms["loss"],
            "reconstruction": terms["reconstruction"],
            "kl": terms["kl"],
        }

    if mixture:
        from_noise = (generate_from_mixture_noise, [latent_spec, uniform_spec])
    else:
        from_noise = (generate_from_noise, [latent_spec])
    functions = {
        "serving_default": (encode, [images_spec]),
        "decode": (decode, [latent_spec]),
        "reconstruct": (reconstruct, [images_spec]),
        "generate": (generate, [keras.InputSpec(shape=(), dtype="int32")]),
        "generate_from_noise": from_noise,
        "score": (score, [images_spec]),
    }
    if model.num_classes:
        functions = {name: (fn, [*spec, labels_spec]) for name, (fn, spec) in functions.items()}
        functions["generate"] = (generate_for_labels, [labels_spec])
    return functions
