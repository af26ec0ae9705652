"""The serving signatures, shared by the SavedModel and the TFLite files.

Every signature takes a dynamic batch, has named inputs and outputs, returns
plain float32 tensors (never TFP objects) and uses only core TF ops, so it
converts to TFLite builtins. Sampling uses the stateful `RandomStandardNormal`
op with no seed, so every fresh load draws new samples.

| signature | inputs | outputs |
|---|---|---|
| `serving_default` (encode) | `images` uint8 (batch, H, W, C) | `z_mean`, `z_log_var`, `z` |
| `decode` | `z` float32 (batch, latent) | `mean` (pixel means/probabilities), `logits` |
| `reconstruct` | `images` uint8 | `reconstruction` (decoded posterior mean) |
| `generate` | `count` int32 scalar | `images`, `z` |
| `generate_from_noise` | `noise` float32 (batch, latent), N(0, I) | `images`, `z` |
| `score` | `images` uint8 | `negative_elbo`, `reconstruction`, `kl` (nats, deterministic) |

A conditional model's signatures also take `labels` (int32, one per image);
its `generate` takes `labels` instead of `count` (one image per label).
"""

from __future__ import annotations

import keras
import tensorflow as tf

SIGNATURE_NAMES = (
    "serving_default",
    "decode",
    "reconstruct",
    "generate",
    "generate_from_noise",
    "score",
)


def _to_unit_interval(images):
    return tf.cast(images, tf.float32) / 255.0


def signature_functions(model) -> dict:
    """name -> (fn, input_signature) for every signature of `model`."""
    if model.prior != "standard_normal":
        raise ValueError(
            f"Export supports the standard_normal prior only; this model's prior is "
            f"{model.prior!r}."
        )
    images_spec = keras.InputSpec(shape=(None, *model.image_shape), dtype="uint8")
    latent_spec = keras.InputSpec(shape=(None, model.latent_dim), dtype="float32")

    labels_spec = keras.InputSpec(shape=(None,), dtype="int32")

    # `labels` is None for an unconditional model; a conditional one's
    # signatures take it as a second input (one int32 class per image).
    def encode(images, labels=None):
        z_mean, z_log_var = model.encode(_to_unit_interval(images), labels=labels)
        noise = tf.random.normal(tf.shape(z_mean))
        return {
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z_mean + tf.exp(0.5 * z_log_var) * noise,
        }

    def decode(z, labels=None):
        return model.decode(z, labels=labels)

    def reconstruct(images, labels=None):
        return {"reconstruction": model.reconstruct(_to_unit_interval(images), labels)}

    def generate_from_noise(noise, labels=None):
        z = noise  # The standard normal prior: z is the noise itself.
        return {"images": model.decode(z, labels=labels)["mean"], "z": z}

    def generate(count):
        return generate_from_noise(tf.random.normal(tf.stack([count, model.latent_dim])))

    def generate_for_labels(labels):
        noise = tf.random.normal(tf.stack([tf.size(labels), model.latent_dim]))
        return generate_from_noise(noise, labels)

    def score(images, labels=None):
        terms = model.negative_elbo(_to_unit_interval(images), sample=False, labels=labels)
        return {
            "negative_elbo": terms["loss"],
            "reconstruction": terms["reconstruction"],
            "kl": terms["kl"],
        }

    if model.num_classes:
        return {
            "serving_default": (encode, [images_spec, labels_spec]),
            "decode": (decode, [latent_spec, labels_spec]),
            "reconstruct": (reconstruct, [images_spec, labels_spec]),
            "generate": (generate_for_labels, [labels_spec]),
            "generate_from_noise": (generate_from_noise, [latent_spec, labels_spec]),
            "score": (score, [images_spec, labels_spec]),
        }
    return {
        "serving_default": (encode, [images_spec]),
        "decode": (decode, [latent_spec]),
        "reconstruct": (reconstruct, [images_spec]),
        "generate": (generate, [keras.InputSpec(shape=(), dtype="int32")]),
        "generate_from_noise": (generate_from_noise, [latent_spec]),
        "score": (score, [images_spec]),
    }
