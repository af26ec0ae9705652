"""Examples/second with 1 and 2 replicas, and the scaling efficiency.

    python benchmarks/replica_scaling.py [--steps 60] [--batch-size 128]

Each configuration runs in a fresh process (the CPU split must happen before
TensorFlow starts): `default` on one device, then `mirrored` over 2 devices:
all local GPUs when there are several, else 2 logical CPU devices (which
share the same physical cores, so on a CPU this measures overhead, not a
speed-up). Efficiency = (2-replica rate) / (2 x 1-replica rate).
"""

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = """
import json, sys, time
import numpy as np, tensorflow as tf, keras
sys.path.insert(0, {repo!r})
from keras_vae import distribute
if {logical} and not tf.config.list_physical_devices("GPU"):
    distribute.split_cpu(2)
strategy = distribute.make_strategy({strategy!r})
from keras_vae.vae import VAE
with strategy.scope():
    model = VAE(latent_dim=16, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
images = np.random.default_rng(0).random(({steps} * {batch}, 28, 28, 1)).astype("float32")
ds = tf.data.Dataset.from_tensor_slices(images).batch({batch}).cache().prefetch(4)
model.fit(ds.take(10), epochs=1, verbose=0)  # trace and warm up
start = time.perf_counter()
model.fit(ds, epochs=1, verbose=0)
rate = {steps} * {batch} / (time.perf_counter() - start)
print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "examples_per_second": rate}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    results = []
    for strategy, logical in (("default", False), ("mirrored", True)):
        code = MEASURE.format(
            repo=REPO, logical=logical, strategy=strategy, steps=args.steps, batch=args.batch_size
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    one, two = results
    print("| replicas | examples/s |")
    print("|---|---|")
    for r in results:
        print(f"| {r['replicas']} | {r['examples_per_second']:.0f} |")
    efficiency = two["examples_per_second"] / (2 * one["examples_per_second"])
    print(f"\nScaling efficiency (2 replicas): {efficiency:.2f}")
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    print(
        f"Devices: {gpus} GPU(s)"
        if gpus
        else f"Devices: 2 logical CPU devices on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
