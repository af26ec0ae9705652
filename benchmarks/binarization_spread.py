"""How much a test bound depends on the one random binarization of the test set.

    python benchmarks/binarization_spread.py --model runs/RUN [--model runs/OTHER]
        [--seeds 1 2 3] [--iw-samples 1000] [--max-images N]

A binarized protocol (`--protocol literature|vampprior`) draws the test
set's Bernoulli pixels once, from the run's `--seed`; papers do the same
with their own seed, so a published bound is one draw too. For each run and
each `--seeds` value this binarizes the test split afresh with that seed and
prints the IW bound (-L_K, K=`--iw-samples`, float32, all test images or the
first `--max-images`), then each run's mean and standard deviation over the
seeds and, with two runs, their difference per seed (the same images and
pixels for both). Then the CPU model.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from cli_startup import cpu_model  # noqa: E402

from keras_vae import data, evaluation, precision, runs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="A finished run.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()
    bounds = {}
    for run_dir in args.model:
        config, model = runs.load_run(run_dir)
        if data.evaluation_binarize(config) == "none":
            sys.exit(f"{run_dir} is not a binarized run: its test set has no random draw.")
        model = precision.with_policy(model, "float32")
        for seed in args.seeds:
            images, labels, _ = data.load_test_examples(
                dataclasses.replace(config, seed=seed), args.max_images
            )
            result = evaluation.evaluate(model, images, args.iw_samples, labels=labels, verbose=0)
            bounds[run_dir, seed] = result["iw_nll_nats"]
            print(
                f"{run_dir}, binarization seed {seed}: {result['iw_nll_nats']:.2f} nats "
                f"({len(images)} images, K={args.iw_samples}, {result['seconds']:.0f} s)",
                flush=True,
            )
    print("| run | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | std |")
    print("|---|" + "---|" * (len(args.seeds) + 2))
    rows = [[bounds[r, s] for s in args.seeds] for r in args.model]
    for run_dir, row in zip(args.model, rows, strict=True):
        cells = " | ".join(f"{b:.2f}" for b in row)
        print(f"| {run_dir} | {cells} | {np.mean(row):.2f} | {np.std(row, ddof=1):.2f} |")
    if len(rows) == 2:
        difference = np.subtract(rows[1], rows[0])
        cells = " | ".join(f"{d:+.2f}" for d in difference)
        print(
            f"| second - first | {cells} | {difference.mean():+.2f} | "
            f"{np.std(difference, ddof=1):.2f} |"
        )
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
