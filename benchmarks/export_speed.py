"""Size, fresh-process load time, latency and error of every exported artifact.

    python benchmarks/export_speed.py --run runs/RUN [--repeats 50]

For the SavedModel version 1 and each `.tflite` file of a finished run:
size on disk; time to import the runtime and load the model in a fresh
process (TensorFlow for the SavedModel, LiteRT alone for `.tflite`); median
latency of each signature at batch 1 and 256 and the images/second that
gives (LiteRT with one thread, after 10 warm-up calls); and the max absolute
error of every deterministic output against the float32 SavedModel (pixel
means for decode/generate/reconstruct, nats for score). Prints a Markdown
table.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_vae.export.runner import LiteRTRunner, SavedModelRunner  # noqa: E402

BATCHES = (1, 256)
# The output whose error each deterministic signature is judged by.
PRIMARY_OUTPUT = {
    "decode": "mean",
    "generate_from_noise": "images",
    "reconstruct": "reconstruction",
    "score": "negative_elbo",
}

LOAD_SNIPPET = {
    "saved_model": "import tensorflow as tf; tf.saved_model.load({path!r})",
    "tflite": "from ai_edge_litert.interpreter import Interpreter; "
    "Interpreter(model_path={path!r}).allocate_tensors()",
}


def fresh_load_seconds(kind, path):
    code = "import time; t = time.perf_counter(); " + LOAD_SNIPPET[kind].format(path=path)
    code += "; print(time.perf_counter() - t)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def inputs_for(spec, batch, images, rng):
    out = {}
    for name, tensor in spec.inputs.items():
        if not tensor.shape:
            out[name] = np.array(batch, np.int32)
        elif tensor.dtype == "uint8":
            out[name] = np.resize(images, (batch, *tensor.shape[1:])).astype(np.uint8)
        elif name == "labels":
            out[name] = np.arange(batch, dtype=np.int32) % 2
        elif name == "uniform":  # a mixture prior's component picker, in [0, 1)
            out[name] = rng.random(batch).astype(np.float32)
        else:
            out[name] = rng.standard_normal((batch, *tensor.shape[1:])).astype(np.float32)
    return out


def median_ms(runner, signature, inputs, repeats):
    for _ in range(10):  # warm-up (and resize, for LiteRT)
        runner.run(signature, inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(signature, inputs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="A finished train.py run directory.")
    parser.add_argument("--model-name", default="vae")
    parser.add_argument("--version", default="1")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    sm_path = os.path.join(args.run, "saved_model", args.model_name, args.version)
    tfl_dir = os.path.join(args.run, "tflite", args.model_name, args.version)
    artifacts = [("saved_model", "SavedModel", sm_path)] + [
        ("tflite", name, os.path.join(tfl_dir, name)) for name in sorted(os.listdir(tfl_dir))
    ]
    reference = SavedModelRunner(sm_path)
    rng = np.random.default_rng(0)
    images = (
        rng.random((64, *reference.signatures["score"].inputs["images"].shape[1:])) * 255
    ).astype(np.uint8)
    rows = []
    for kind, name, path in artifacts:
        size = (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
            if os.path.isdir(path)
            else os.path.getsize(path)
        )
        load = fresh_load_seconds(kind, path)
        runner = reference if kind == "saved_model" else LiteRTRunner(path, num_threads=1)
        for signature in sorted(runner.signatures):
            spec = runner.signatures[signature]
            latency = {}
            for batch in BATCHES:
                inputs = inputs_for(spec, batch, images, np.random.default_rng(1))
                latency[batch] = median_ms(runner, signature, inputs, args.repeats)
            error = "-"
            if signature in PRIMARY_OUTPUT:
                key = PRIMARY_OUTPUT[signature]
                inputs = inputs_for(spec, 64, images, np.random.default_rng(1))
                want = reference.run(signature, inputs)[key]
                got = runner.run(signature, inputs)[key]
                error = f"{key} {float(np.abs(got - want).max()):.2g}"
                if signature == "score":  # nats: relative error says more
                    error += f" ({float(np.abs(got / want - 1).max()):.1g} rel.)"
            rows.append(
                f"| {name} | {size / 1024:.0f} KiB | {load:.2f} s | {signature} | "
                f"{latency[1]:.3f} | {1000 / latency[1]:,.0f} | {latency[256]:.2f} | "
                f"{256_000 / latency[256]:,.0f} | {error} |"
            )
    print(
        "| artifact | size | fresh load | signature | batch 1 (ms) | batch 1 (img/s) "
        "| batch 256 (ms) | batch 256 (img/s) | max abs error vs float32 SavedModel |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
