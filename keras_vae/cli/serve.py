"""`keras-vae serve`: inspect, run and serve the signatures of an exported model.

    keras-vae serve list MODEL     (or: python serve_signature.py list MODEL)
    keras-vae serve run MODEL --signature score --images a.png b.png
    keras-vae serve rest --signature score --images a.png [--url URL]
    keras-vae serve grpc --signature score --images a.png --target HOST:8500

MODEL is a SavedModel version directory (RUN/saved_model/vae/1) or a .tflite
file. `run` with a .tflite file uses LiteRT and never imports TensorFlow.
`rest` writes (or POSTs to TF Serving) the JSON body of
`POST /v1/models/<name>:predict`; `grpc` sends a real `PredictRequest` to
TF Serving's `PredictionService`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np

from keras_vae.cli import common

HELP = "List, run or send the signatures of an export."


def load_inputs(args) -> dict:
    """`--images` files and `--input NAME=FILE.npy|NUMBER` -> numpy arrays."""
    inputs = {}
    if args.images:
        inputs["images"] = read_images(args.images)
    for item in args.input or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--input {item!r}: expected NAME=FILE.npy or NAME=NUMBER.")
        if value.endswith(".npy"):
            inputs[name] = np.load(value)
        else:
            try:
                number = int(value)
            except ValueError:
                raise ValueError(
                    f"--input {item!r}: {value!r} is neither a .npy file nor an integer."
                ) from None
            if not -(2**31) <= number < 2**31:
                raise ValueError(f"--input {item!r}: {number} does not fit an int32 input.")
            inputs[name] = np.array(number, np.int32)
    if not inputs:
        raise ValueError("No inputs: pass --images FILES or --input NAME=FILE.npy.")
    return inputs


def read_images(paths) -> np.ndarray:
    """Image files (PNG, JPEG, ...) or one .npy -> uint8 (batch, H, W, C).

    Each file is converted by its mode (`keras_vae.images`): 16-bit, palette,
    1-bit and alpha images are read right, float images are refused.
    """
    if len(paths) == 1 and paths[0].endswith(".npy"):
        return np.load(paths[0])
    from keras_vae.images import read_image

    arrays = [read_image(path) for path in paths]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"The images have different sizes {sorted(shapes)}; resize them first.")
    return np.stack(arrays)


def rest_body(signature: str, inputs: dict, form: str = "inputs") -> dict:
    """TF Serving's REST predict body, row (`instances`) or columnar (`inputs`)."""
    if form == "inputs":
        return {"signature_name": signature, "inputs": {k: v.tolist() for k, v in inputs.items()}}
    if form != "instances":
        raise ValueError(f"Unknown REST form {form!r}: expected 'instances' or 'inputs'.")
    if any(np.ndim(v) == 0 for v in inputs.values()):
        raise ValueError("Scalar inputs (e.g. `count`) need the columnar form: --form inputs.")
    sizes = {len(v) for v in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"Row format needs one batch size for every input; got {sorted(sizes)}.")
    n = sizes.pop()
    return {
        "signature_name": signature,
        "instances": [{k: v[i].tolist() for k, v in inputs.items()} for i in range(n)],
    }


def predict_request(model_name: str, signature: str, inputs: dict):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest`."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
    )
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _summarise(outputs: dict) -> dict:
    return {
        k: {
            "shape": list(np.shape(v)),
            "values": np.asarray(v).tolist() if np.size(v) <= 64 else "...",
        }
        for k, v in outputs.items()
    }


# The outputs each keras-vae signature always returns (keras_vae/export/signatures.py;
# the mixture and GMM forms add `component`), to check a server's answer without
# TensorFlow. tests/test_export.py checks this against a real export.
SIGNATURE_OUTPUTS = {
    "serving_default": ("z_mean", "z_log_var", "z"),
    "decode": ("mean", "logits"),
    "reconstruct": ("reconstruction",),
    "generate": ("images", "z"),
    "generate_from_noise": ("images", "z"),
    "score": ("negative_elbo", "reconstruction", "kl"),
    "generate_gmm": ("images", "z"),
}


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _batch_of(inputs: dict) -> int | None:
    if "count" in inputs and np.ndim(inputs["count"]) == 0:
        return int(inputs["count"])
    sizes = {len(v) for v in inputs.values() if np.ndim(v) > 0}
    return sizes.pop() if len(sizes) == 1 else None


def check_rest_answer(answer: str, signature: str, inputs: dict, form: str) -> dict:
    """TF Serving's REST answer, checked: JSON, the signature's outputs, one row per input.

    Returns the outputs as `{name: value}`.

    Raises:
        ValueError: naming what is wrong, with the server's reply (shortened).
    """
    said = f"TF Serving answered: {_short(answer)}"
    try:
        reply = json.loads(answer)
    except json.JSONDecodeError:
        raise ValueError(f"The answer is not JSON. {said}") from None
    key = "outputs" if form == "inputs" else "predictions"
    if not isinstance(reply, dict) or key not in reply:
        raise ValueError(f"The answer has no `{key}`. {said}")
    expected = SIGNATURE_OUTPUTS.get(signature)
    outputs = reply[key]
    if form == "instances" and isinstance(outputs, list):
        if outputs and all(isinstance(row, dict) for row in outputs):
            outputs = {k: [row.get(k) for row in outputs] for k in outputs[0]}
        else:  # one output: rows of bare values
            outputs = {(expected or ("output",))[0]: outputs}
    elif not isinstance(outputs, dict):  # one output: TF Serving drops its name
        outputs = {(expected or ("output",))[0]: outputs}
    missing = [n for n in (expected or ()) if n not in outputs]
    if missing or not outputs:
        raise ValueError(
            f"The answer lacks the outputs {missing or 'of any kind'} of signature "
            f"{signature!r}. {said}"
        )
    batch = _batch_of(inputs)
    for name, value in outputs.items():
        if batch is not None and (not isinstance(value, list) or len(value) != batch):
            rows = len(value) if isinstance(value, list) else "no"
            raise ValueError(f"The answer's `{name}` has {rows} rows for {batch} inputs. {said}")
    return outputs


MAX_TIMEOUT_SECONDS = 3600.0


def _timeout(text: str) -> float:
    """An argparse `type`: seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"expected seconds > 0 and <= {MAX_TIMEOUT_SECONDS:.0f}, got {text}"
        )
    return value


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"--url {url!r}: expected TF Serving's http:// or https:// address, e.g. "
            "http://localhost:8501/v1/models/vae."
        )
    return url


def _write_whole(path: str, write) -> None:
    """`write(tmp)` to a temporary file beside `path`, renamed over it only when
    complete (keras_vae.files does the same, but importing keras_vae could load
    TensorFlow, which `run` with a .tflite never does)."""
    suffix = os.path.splitext(path)[1]
    tmp = f"{path}.{os.getpid()}.tmp{suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _save_outputs(path: str, outputs: dict) -> None:
    """`--output FILE.npz` (checked by `main` before any work), written whole or not at all."""
    _write_whole(path, lambda tmp: np.savez(tmp, **outputs))


# The outputs that are images in [0, 1], by signature kind.
IMAGE_OUTPUTS = ("images", "reconstruction", "mean")


def _image_output(model, signature: str) -> str:
    """The name of `signature`'s image output, checked before it runs."""
    spec = model.signatures.get(signature)
    outputs = sorted(spec.outputs) if spec else []
    for key in IMAGE_OUTPUTS:  # `score` has a per-image `reconstruction` in nats: rank 1
        if key in outputs and len(spec.outputs[key].shape) == 4:
            return key
    if spec is None:  # the runner names the signatures that exist
        return ""
    raise ValueError(
        f"--output *.png: signature {signature!r} returns no images (outputs: "
        f"{', '.join(outputs)}); write them to a .npz instead."
    )


def _save_grid(path: str, images) -> None:
    """A grid of `(n, H, W, C)` images in [0, 1] as one PNG, written whole or not at all."""
    from keras_vae.images import image_grid, write_png

    _write_whole(path, lambda tmp: write_png(tmp, image_grid(np.asarray(images, np.float32))))


EXAMPLES = [
    "keras-vae serve list runs/RUN/saved_model/vae/1",
    "keras-vae serve run runs/RUN/tflite/vae/1/vae_float32.tflite --signature generate "
    "--input count=16 --output grid.png",
    "keras-vae serve rest --signature score --images a.png --url http://localhost:8501/v1/models/vae",
]


def main(argv=None, prog: str = "keras-vae serve") -> int:
    parser = common.parser(
        common.prog_name(prog),
        "Inspect, run and serve the signatures of an exported keras-vae model. MODEL is a "
        "SavedModel version directory (RUN/saved_model/vae/1) or a .tflite file; `run` "
        "with a .tflite file uses LiteRT and never imports TensorFlow.",
        EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="List the signatures with their inputs and outputs.")
    listing.add_argument("model", help="SavedModel version directory or .tflite file.")
    common.add_verbose(listing)
    for name, text in [
        ("run", "Run a signature locally."),
        ("rest", "Write (or send) a TF Serving REST predict body."),
        ("grpc", "Send a PredictRequest to TF Serving over gRPC."),
    ]:
        p = sub.add_parser(name, help=text)
        if name == "run":
            p.add_argument("model", help="SavedModel version directory or .tflite file.")
        p.add_argument("--signature", default="serving_default", help="Signature name.")
        p.add_argument("--images", nargs="+", help="Image files, or one .npy (uint8 N,H,W,C).")
        p.add_argument("--input", action="append", help="NAME=FILE.npy or NAME=INTEGER.")
        p.add_argument(
            "--output",
            help="Write the outputs. run: FILE.npz (every output) or FILE.png (a grid of "
            "the images a signature returns: generate, reconstruct, decode); rest: the "
            "JSON body.",
        )
        if name in ("rest", "grpc"):
            p.add_argument(
                "--timeout",
                type=_timeout,
                default=30.0,
                help="Seconds to wait for TF Serving (default 30, at most 3600).",
            )
        if name == "rest":
            p.add_argument("--form", choices=["inputs", "instances"], default="inputs")
            p.add_argument(
                "--url", help="TF Serving model URL, e.g. http://localhost:8501/v1/models/vae"
            )
        if name == "grpc":
            p.add_argument(
                "--target", required=True, help="TF Serving gRPC address, e.g. localhost:8500"
            )
            p.add_argument("--model-name", default="vae")
        common.add_verbose(p)
    args = parser.parse_args(argv)
    common.quiet_console(args.verbose)
    try:
        if args.command == "list":
            from keras_vae.export.runner import open_model

            for spec in open_model(args.model).signatures.values():
                print(spec.describe())
            return 0
        if getattr(args, "output", None):
            folder = os.path.dirname(os.path.abspath(args.output))
            if not os.path.isdir(folder):
                raise ValueError(
                    f"--output {args.output}: the folder {folder} does not exist; create it "
                    "or write somewhere else."
                )
        inputs = load_inputs(args)
        if args.command == "run":
            from keras_vae.export.runner import open_model

            if args.output and not args.output.endswith((".npz", ".png")):
                raise ValueError(
                    f"--output {args.output!r}: expected a file name ending in .npz (every "
                    "output) or .png (a grid of the images)."
                )
            model = open_model(args.model)
            image_key = None
            if args.output and args.output.endswith(".png"):
                image_key = _image_output(model, args.signature)
            outputs = model.run(args.signature, inputs)
            if image_key:
                _save_grid(args.output, outputs[image_key])
            elif args.output:
                _save_outputs(args.output, outputs)
            print(json.dumps(_summarise(outputs), indent=1))
        elif args.command == "rest":
            if args.url:
                _check_url(args.url)
            body = json.dumps(rest_body(args.signature, inputs, args.form))
            if args.output:
                with open(args.output, "w") as f:
                    f.write(body)
            if not args.url:
                if not args.output:
                    print(body)
                return 0
            request = urllib.request.Request(
                args.url.rstrip("/") + ":predict",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=args.timeout) as response:
                    answer = response.read().decode(errors="replace")
                check_rest_answer(answer, args.signature, inputs, args.form)
                print(answer)
            except urllib.error.HTTPError as e:
                raise ValueError(
                    f"TF Serving answered {e.code}: {e.read().decode()[:2000]}"
                ) from None
            except urllib.error.URLError as e:
                raise ValueError(f"Cannot reach TF Serving at {args.url}: {e.reason}") from None
        else:
            import grpc
            import tensorflow as tf
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            request = predict_request(args.model_name, args.signature, inputs)
            with grpc.insecure_channel(args.target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                try:
                    response = stub.Predict(request, timeout=args.timeout)
                except grpc.RpcError as e:
                    raise ValueError(
                        f"TF Serving gRPC call failed: {e.code().name}: {e.details()}"
                    ) from None
            outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
            print(json.dumps(_summarise(outputs), indent=1))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
