"""Deployment: a SavedModel for TF Serving and TFLite files for LiteRT.

- `writer.py`: `export_all`, one version of every format.
- `saved_model.py`, `tflite.py`: one format each.
- `signatures.py`: the signature functions both formats share.
- `runner.py`: one checked runner for a SavedModel or a `.tflite` (LiteRT
  without TensorFlow).

- `serve.py`: the `serve_signature.py` / `keras-vae-serve` command line.
- `__main__.py`: the `python -m export` / `keras-vae-export` command line.

This file only re-exports, lazily, so that `runner` and `serve` load
without TensorFlow when a command line starts them (see `keras_vae/__init__`).
The repository's `export/` and `serve_signature.py` are thin wrappers around
these modules; only `keras_vae` is installed.
"""


def __getattr__(name):
    if name == "export_all":
        from keras_vae.export.writer import export_all

        return export_all
    raise AttributeError(f"module 'keras_vae.export' has no attribute {name!r}")


__all__ = ["export_all"]
