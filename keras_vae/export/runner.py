"""Run a signature of a SavedModel or a `.tflite` file, with input checks.

`open_model(path)` returns a runner for either format with the same API:
`runner.signatures` (name -> `SignatureSpec`) and `runner.run(name, inputs)`.
Inputs are checked against the signature before anything runs (unknown
signature, missing input, dtype, shape, empty batch, NaN/inf), so bad input
gets a `ValueError` that names the problem instead of a crashed process.

The `.tflite` runner uses LiteRT (`ai-edge-litert`) and never imports
TensorFlow: it starts in a fraction of a second on a small machine.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

MAX_GENERATE_COUNT = 10_000


@dataclasses.dataclass
class TensorSpec:
    dtype: str  # numpy dtype name
    shape: tuple  # None for a dynamic dimension

    def describe(self) -> str:
        dims = ", ".join("batch" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclasses.dataclass
class SignatureSpec:
    name: str
    inputs: dict  # name -> TensorSpec
    outputs: dict  # name -> TensorSpec

    def describe(self) -> str:
        ins = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(self.inputs.items()))
        outs = ", ".join(f"{k}: {v.describe()}" for k, v in sorted(self.outputs.items()))
        return f"{self.name}({ins}) -> {outs}"


def _exact_in_float(value: np.ndarray, dtype) -> bool:
    """Integers that `dtype` holds exactly (|v| <= 2^(mantissa bits + 1))."""
    limit = 2 ** (np.finfo(dtype).nmant + 1)
    return not value.size or (value.min() >= -limit and value.max() <= limit)


def check_inputs(spec: SignatureSpec, inputs: dict) -> dict:
    """Validated, dtype-exact numpy inputs for `spec`, or a ValueError."""
    missing = sorted(set(spec.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(spec.inputs))
    if missing or extra:
        raise ValueError(
            f"Signature {spec.name!r} takes inputs {sorted(spec.inputs)}. "
            f"Missing: {missing}. Unexpected: {extra}."
        )
    checked = {}
    for name, tensor_spec in spec.inputs.items():
        value = np.asarray(inputs[name])
        want = np.dtype(tensor_spec.dtype)
        if value.dtype != want:
            if not np.issubdtype(value.dtype, np.integer):
                lossless = False
            elif np.issubdtype(want, np.floating):
                lossless = _exact_in_float(value, want)
            else:
                lossless = not value.size or (
                    value.min() >= np.iinfo(want).min and value.max() <= np.iinfo(want).max
                )
            if not (
                lossless
                or (np.issubdtype(value.dtype, np.floating) and np.issubdtype(want, np.floating))
            ):
                hint = " (images are uint8 pixels, 0-255)" if want == np.uint8 else ""
                raise ValueError(
                    f"Input {name!r} of signature {spec.name!r} has dtype {value.dtype}; "
                    f"expected {tensor_spec.dtype}{hint}."
                )
            value = value.astype(want)
        shape = tensor_spec.shape
        if value.ndim != len(shape) or any(
            d is not None and d != v for d, v in zip(shape, value.shape, strict=True)
        ):
            raise ValueError(
                f"Input {name!r} of signature {spec.name!r} has shape {value.shape}; "
                f"expected {tensor_spec.describe()}. Check the image size and channel "
                "count the model was trained on."
            )
        if shape and value.shape[0] == 0:
            raise ValueError(f"Input {name!r} of signature {spec.name!r} is an empty batch.")
        if name == "labels" and value.size and value.min() < 0:
            raise ValueError(
                f"Input 'labels' of signature {spec.name!r} must hold class indices >= 0. "
                f"Received: {int(value.min())}"
            )
        if np.issubdtype(want, np.floating) and not np.isfinite(value).all():
            raise ValueError(f"Input {name!r} of signature {spec.name!r} contains NaN or inf.")
        if name == "uniform" and value.size and (value.min() < 0 or value.max() >= 1):
            raise ValueError(
                f"Input 'uniform' of signature {spec.name!r} picks mixture components: "
                f"values must lie in [0, 1). Received: {value.min()} to {value.max()}"
            )
        if not shape and not 1 <= int(value) <= MAX_GENERATE_COUNT:
            raise ValueError(
                f"Input {name!r} of signature {spec.name!r} must be between 1 and "
                f"{MAX_GENERATE_COUNT}. Received: {int(value)}"
            )
        checked[name] = value
    return checked


class Runner:
    """Common front of the two runtimes."""

    signatures: dict

    def run(self, signature: str, inputs: dict) -> dict:
        if signature not in self.signatures:
            raise ValueError(
                f"Unknown signature {signature!r}. This model has {sorted(self.signatures)}."
            )
        spec = self.signatures[signature]
        return self._run(signature, check_inputs(spec, inputs))


class SavedModelRunner(Runner):
    def __init__(self, path):
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(path)
        except (tf.errors.OpError, IndexError, OSError) as e:
            # A missing, truncated or altered variables file: TF's checkpoint
            # reader raises OpError or IndexError ("Read less bytes than requested").
            raise ValueError(
                f"The SavedModel in {path} cannot be loaded: its variables are missing or "
                f"damaged ({str(e).splitlines()[0][:200]}). Export the model again "
                "(python -m export --model RUN)."
            ) from None
        self.signatures = {}
        for name, fn in self._loaded.signatures.items():
            specs_in = fn.structured_input_signature[1]
            specs_out = fn.structured_outputs
            self.signatures[name] = SignatureSpec(
                name,
                {
                    k: TensorSpec(s.dtype.name, tuple(s.shape.as_list()))
                    for k, s in specs_in.items()
                },
                {
                    k: TensorSpec(s.dtype.name, tuple(s.shape.as_list()))
                    for k, s in specs_out.items()
                },
            )

    def _run(self, signature, inputs):
        outputs = self._loaded.signatures[signature](**inputs)
        return {k: v.numpy() for k, v in outputs.items()}


class LiteRTRunner(Runner):
    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        except (ValueError, RuntimeError) as e:  # a truncated or non-TFLite file
            raise ValueError(
                f"{path} is not a readable .tflite model ({str(e).splitlines()[0][:200]}). "
                "Export the model again (python -m export --model RUN)."
            ) from None
        self.signatures = {}
        for name in self._interpreter.get_signature_list():
            runner = self._interpreter.get_signature_runner(name)
            self.signatures[name] = SignatureSpec(
                name,
                {k: _litert_spec(d) for k, d in runner.get_input_details().items()},
                {k: _litert_spec(d) for k, d in runner.get_output_details().items()},
            )

    def _run(self, signature, inputs):
        outputs = self._interpreter.get_signature_runner(signature)(**inputs)
        return {k: np.array(v) for k, v in outputs.items()}


def _litert_spec(details):
    shape = tuple(None if d < 0 else int(d) for d in details["shape_signature"])
    return TensorSpec(np.dtype(details["dtype"]).name, shape)


def open_model(path: str, num_threads: int | None = None) -> Runner:
    """A runner for a SavedModel directory or a `.tflite` file."""
    if path.endswith(".tflite") and os.path.isfile(path):
        return LiteRTRunner(path, num_threads)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelRunner(path)
    raise ValueError(
        f"{path} is neither a `.tflite` file nor a SavedModel directory (one that "
        "holds saved_model.pb, e.g. RUN/saved_model/vae/1)."
    )
