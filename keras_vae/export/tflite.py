"""TFLite files for the LiteRT runtime (Android, iOS, Python).

From the model's signatures, exported with the decoder's transposed
convolutions rewritten as convolutions + depth_to_space
(`keras_vae.decoder_forms.as_convolutions`, the same function; LiteRT runs it
about 1.6x faster at batch 1):
- `vae_float32.tflite`: every signature, float32.
- `vae_float16.tflite`: every signature, float16 weights (half the size; the
  recommended mobile build).
- `decoder_int8.tflite`: `decode` and `generate_from_noise` with int8 weights
  and activations, calibrated on latents of real images. About twice as fast,
  but NOT for scoring: int8 error changes the ranking of per-image scores.

All use TFLite builtin ops only (no Flex/SELECT_TF_OPS).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from keras_vae.export.signatures import SIGNATURE_NAMES
from keras_vae.runs import atomic_write

INT8_SIGNATURES = ("decode", "generate_from_noise")
CALIBRATION_SIZE = 200


def _convert(saved_model_dir, signature_keys, configure=None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if configure:
        configure(converter)
    with warnings.catch_warnings():
        # The int8 calibration runs TensorFlow's own deprecated tf.lite.Interpreter:
        # its deprecation notice is TensorFlow's to act on, not the user's.
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        return converter.convert()


def _write(path, content: bytes) -> str:
    with atomic_write(path, "wb") as f:
        f.write(content)
    return path


def export_tflite(
    saved_model_dir: str,
    out_dir: str,
    calibration_z: np.ndarray,
    num_classes: int = 0,
    noise_inputs=("noise",),
    signatures=SIGNATURE_NAMES,
) -> dict:
    """Converts a SavedModel version to the three `.tflite` files.

    Args:
        saved_model_dir: str. A SavedModel with the signatures of
            `export.signatures` (what `saved_model.build_archive` writes).
        out_dir: str. Where the files go.
        calibration_z: float32 `(n, latent_dim)`: posterior means of real
            images, the int8 decoder's calibration data.
        num_classes: int. A conditional model's class count (labels cycle
            through the classes during calibration); 0 otherwise.
        noise_inputs: the inputs of the model's `generate_from_noise`, as
            its prior declares them (`uniform`: a mixture's component).
        signatures: the signature names to convert (all the SavedModel's).

    Returns:
        dict: `float32`, `float16`, `int8_decoder` -> path.
    """
    os.makedirs(out_dir, exist_ok=True)

    def float16(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    def int8(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

        def representative_dataset():
            # (signature, inputs) pairs: each signature is calibrated on its own.
            latents = np.asarray(calibration_z, np.float32)[:CALIBRATION_SIZE]
            for i, z in enumerate(latents):
                extra = {"labels": np.array([i % num_classes], np.int32)} if num_classes else {}
                yield "decode", {"z": z[None], **extra}
                if "uniform" in noise_inputs:  # every component, with typical noise
                    extra["uniform"] = np.array([(i + 0.5) / len(latents)], np.float32)
                    z = np.random.default_rng(i).standard_normal(z.shape).astype(np.float32)
                yield "generate_from_noise", {"noise": z[None], **extra}

        converter.representative_dataset = representative_dataset

    return {
        "float32": _write(
            os.path.join(out_dir, "vae_float32.tflite"), _convert(saved_model_dir, signatures)
        ),
        "float16": _write(
            os.path.join(out_dir, "vae_float16.tflite"),
            _convert(saved_model_dir, signatures, float16),
        ),
        "int8_decoder": _write(
            os.path.join(out_dir, "decoder_int8.tflite"),
            _convert(saved_model_dir, INT8_SIGNATURES, int8),
        ),
    }
