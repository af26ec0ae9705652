"""The importance-weighted bound against K, for one trained run.

    python benchmarks/iw_vs_k.py --model runs/RUN [--ks 1 10 100 1000 5000] [--max-images 1000]

For each K it evaluates -L_K (nats per image) on the first `--max-images`
test images of the run's test split (a binarized run's fixed binarization),
in float32, with `keras_vae.evaluation.evaluate`, and prints a Markdown table
with the bound and the seconds each took, then the CPU model. L_1 is the ELBO (one sample), and
-L_K falls towards -log p(x) as K grows (Burda et al. 2016).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from cli_startup import cpu_model  # noqa: E402

from keras_vae import data, evaluation, precision, runs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A finished run directory.")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100, 1000, 5000])
    parser.add_argument("--max-images", type=int, default=1000)
    args = parser.parse_args()
    config, model = runs.load_run(args.model)
    model = precision.with_policy(model, "float32")
    images, labels, _ = data.load_test_examples(config, args.max_images)
    print(f"{args.model}: {len(images)} test images of {config.test_split}, float32")
    print("| K | -L_K (nats) | seconds |")
    print("|---|---|---|")
    for k in args.ks:
        start = time.perf_counter()
        nll = []
        for first in range(0, len(images), 100):
            batch_labels = None
            if labels is not None and model.num_classes:
                batch_labels = tf.constant(labels[first : first + 100], tf.int32)
            batch = tf.constant(images[first : first + 100], tf.float32)
            nll.append(evaluation.importance_weighted_nll(model, batch, k, labels=batch_labels))
        nll = np.concatenate([n.numpy() for n in nll])
        print(f"| {k} | {nll.mean():.2f} | {time.perf_counter() - start:.0f} |")
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
