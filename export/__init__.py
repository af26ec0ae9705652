"""Deployment: a SavedModel for TF Serving and TFLite files for LiteRT.

- `writer.py`: `export_all`, one version of every format.
- `saved_model.py`, `tflite.py`: one format each.
- `signatures.py`: the signature functions both formats share.
- `runner.py`: one checked runner for a SavedModel or a `.tflite` (LiteRT
  without TensorFlow).

This file only re-exports, lazily: `export.runner` must load without
TensorFlow.
"""


def __getattr__(name):
    if name == "export_all":
        from export.writer import export_all

        return export_all
    raise AttributeError(f"module 'export' has no attribute {name!r}")


__all__ = ["export_all"]
