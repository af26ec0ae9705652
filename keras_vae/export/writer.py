"""`export_all`: one version of every deployment format of a trained VAE.

Example:

```python
import numpy as np
import keras_vae
from keras_vae.export import export_all

model = keras_vae.VAE(latent_dim=2)
model.compile("adam")
model.fit(np.zeros((8, 28, 28, 1), np.float32), epochs=1, verbose=0)
images = np.zeros((8, 28, 28, 1), np.uint8)  # real images calibrate int8 better
paths = export_all(model, "/tmp/keras_vae_example_all", model_name="vae", images=images)
assert paths["tflite"]["float16"].endswith("vae_float16.tflite")
```
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from keras_vae import decoder_forms
from keras_vae.data import to_unit_interval
from keras_vae.errors import UsageError
from keras_vae.export import saved_model
from keras_vae.export import tflite as tflite_lib
from keras_vae.export.signatures import signature_names
from keras_vae.files import remove_stale_staging
from keras_vae.precision import with_policy
from keras_vae.runs import lock_run_dir


def export_all(
    model, out_dir: str, model_name: str = "vae", images=None, tflite: bool = True, gmm=None
) -> dict:
    """Exports the next SavedModel version and, optionally, the TFLite files.

    Args:
        model: a `keras_vae.VAE`.
        out_dir: str. Gets `saved_model/<model_name>/<version>/` and
            `tflite/<model_name>/<version>/*.tflite`.
        model_name: str. The name TF Serving serves the model under.
        images: uint8 `(n, H, W, C)` real images: the warm-up requests and the
            int8 decoder's calibration data (their posterior means). Required
            when `tflite` is True.
        tflite: bool. Also write the `.tflite` files. Defaults to `True`.
        gmm: a fitted `keras_vae.samplers.GaussianMixtureSampler` or None:
            every format also gets the `generate_gmm` signature.
    """
    if tflite and images is None:
        raise UsageError(
            "The int8 decoder is calibrated on real images: pass `images` "
            "(uint8, shape (n, H, W, C)) or export with tflite=False."
        )
    if images is not None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != tuple(model.image_shape):
            raise UsageError(
                f"Expected uint8 images of shape (n, {', '.join(map(str, model.image_shape))}) "
                f"for calibration. Received: dtype={images.dtype}, shape={images.shape}"
            )
    # Exports never carry bfloat16/float16 ops: TFLite has no bfloat16
    # kernels, and scores should not depend on how the model was trained.
    os.makedirs(out_dir, exist_ok=True)
    lock_run_dir(out_dir)  # two exports of one run never share a version
    model = with_policy(model, "float32")
    tflite_base = os.path.join(out_dir, "tflite", model_name)
    staging = None
    try:
        if tflite:
            # The .tflite files first, into a hidden folder, so that a failure
            # (a full disk, a conversion error) leaves no new version at all.
            os.makedirs(tflite_base, exist_ok=True)
            # Left by an export that was killed (the run directory is locked: no
            # other export of it is running).
            remove_stale_staging(tflite_base, ".tmp-export-")
            staging = tempfile.mkdtemp(prefix=f".tmp-export-{os.getpid()}-", dir=tflite_base)
            staged = _convert_tflite(model, images, staging, gmm)
        version_dir = saved_model.export_saved_model(
            model, os.path.join(out_dir, "saved_model", model_name), images, gmm
        )
        paths = {"saved_model": version_dir}
        if tflite:
            # Versioned like the SavedModel: never overwritten.
            final = os.path.join(tflite_base, os.path.basename(version_dir))
            os.rename(staging, final)
            staging = None
            paths["tflite"] = {
                k: os.path.join(final, os.path.basename(v)) for k, v in staged.items()
            }
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return paths


def _convert_tflite(model, images, out_dir: str, gmm=None) -> dict:
    """The three `.tflite` files of `model` in `out_dir`: kind -> path."""
    labels = None
    if model.num_classes:  # calibration only needs typical latents: cycle the classes
        labels = np.arange(len(images)) % model.num_classes
    z_mean, _ = model.encode(to_unit_interval(images), labels=labels)
    with tempfile.TemporaryDirectory(prefix="keras_vae_tflite_") as source:
        # The same signatures, the decoder in its convolution form (faster
        # in LiteRT, slower in TF Serving at large batches).
        saved_model.build_archive(
            model.with_decoder(decoder_forms.as_convolutions(model.decoder)), gmm
        ).write_out(source, verbose=False)
        return tflite_lib.export_tflite(
            source,
            out_dir,
            z_mean.numpy(),
            model.num_classes,
            model.prior_layer.noise_inputs,
            signature_names(gmm),
        )
