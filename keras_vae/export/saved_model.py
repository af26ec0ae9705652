"""SavedModel export laid out for TensorFlow Serving.

    <out>/saved_model/<model_name>/<version>/

A new export takes the next integer version and never touches an existing
one. It is written to a hidden temporary directory beside the versions and
renamed into place only when complete (a rename within one directory is
atomic), so a server watching the base path never sees half a model.

Example:

```python
import numpy as np
import keras_vae
from keras_vae.export import saved_model

model = keras_vae.VAE(latent_dim=2)
model.compile("adam")
model.fit(np.zeros((8, 28, 28, 1), np.float32), epochs=1, verbose=0)
path = saved_model.export_saved_model(model, "/tmp/keras_vae_example/saved_model/vae")
assert path.startswith("/tmp/keras_vae_example/saved_model/vae/")  # the next version
```
"""

from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_vae.export.signatures import signature_functions

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_TMP_PREFIX = ".tmp-export-"


def existing_versions(base_dir: str) -> list[int]:
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(d) for d in os.listdir(base_dir) if d.isdigit())


def build_archive(model, gmm=None) -> keras.export.ExportArchive:
    """An `ExportArchive` with every signature of `export.signatures` (`generate_gmm`
    too, given a GMM sampler)."""
    # A seed set in this process would be baked into the random ops and every
    # load would repeat the same "random" draws.
    tf.random.set_seed(None)
    archive = keras.export.ExportArchive()
    for name, (fn, input_signature) in signature_functions(model, gmm).items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


def example_inputs(model, images: np.ndarray, gmm=None) -> dict:
    """One small, real input batch per signature (for warm-up and checks)."""
    images = np.asarray(images[:2], dtype=np.uint8)
    z = np.random.default_rng(0).standard_normal((2, model.code_dim)).astype(np.float32)
    noise = {"noise": z, "uniform": np.array([0.25, 0.75], np.float32)}  # what a prior declares
    inputs = {
        "serving_default": {"images": images},
        "decode": {"z": z},
        "reconstruct": {"images": images},
        "generate": {"count": np.array(2, np.int32)},
        "generate_from_noise": {k: noise[k] for k in model.prior_layer.noise_inputs},
        "score": {"images": images},
    }
    if gmm is not None:
        inputs["generate_gmm"] = {"count": np.array(2, np.int32)}
    if model.num_classes:
        labels = np.arange(2, dtype=np.int32) % model.num_classes
        inputs["generate"] = {}
        if gmm is not None:
            inputs["generate_gmm"] = {}
        for tensors in inputs.values():
            tensors["labels"] = labels
    return inputs


def write_warmup_requests(path: str, model_name: str, inputs: dict) -> None:
    """TF Serving's warm-up file: one real PredictRequest per signature."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, tensors in inputs.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, value in tensors.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def export_saved_model(model, base_dir: str, warmup_images=None, gmm=None) -> str:
    """Writes the next version under `base_dir`; returns its path.

    Args:
        model: a `keras_vae.VAE`.
        base_dir: str. `<out>/saved_model/<model_name>`, the path TF Serving
            watches. The model name is its last component.
        warmup_images: uint8 array `(n, H, W, C)` or None. Real images for the
            warm-up requests; zeros if None.
        gmm: a fitted `keras_vae.samplers.GaussianMixtureSampler` or None:
            adds the `generate_gmm` signature.
    """
    os.makedirs(base_dir, exist_ok=True)
    for stale in os.listdir(base_dir):  # left by an export that was killed
        if stale.startswith(_TMP_PREFIX):
            shutil.rmtree(os.path.join(base_dir, stale), ignore_errors=True)
    version = (existing_versions(base_dir) or [0])[-1] + 1
    tmp = os.path.join(base_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}")
    try:
        build_archive(model, gmm).write_out(tmp, verbose=False)
        if warmup_images is None:
            warmup_images = np.zeros((2, *model.image_shape), np.uint8)
        inputs = example_inputs(model, warmup_images, gmm)
        model_name = os.path.basename(os.path.normpath(base_dir))
        write_warmup_requests(os.path.join(tmp, WARMUP_FILE), model_name, inputs)
        final = os.path.join(base_dir, str(version))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
