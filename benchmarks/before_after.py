"""Whole epochs and training passes of two checkouts, alternating, in one run.

    git worktree add /tmp/before <commit>      # the code before a change
    python benchmarks/before_after.py --before /tmp/before [--threads 1 2]
        [--models gated_mlp gated_mlp+vamp hvae hvae+vamp] [--repeats 1]
        [--no-onednn]

For every model and thread count, runs `epoch_speed.py` on the `--before`
checkout, then on this one (`--after`), `--repeats` times, each in a fresh
process, so that a change in the machine's speed hits both alike. Prints a
Markdown table: seconds per whole epoch and training-pass examples/s of
each, their ratios (after / before speed), and the share of the epoch
spent around the pass. `--no-onednn` sets `TF_ENABLE_ONEDNN_OPTS=0`
(TensorFlow's Eigen kernels, as on a CPU without AVX-512: how the suite
simulates an AVX2-only machine); use it with float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {
    "gated_mlp": ("gated_mlp", "standard_normal"),
    "gated_mlp+vamp": ("gated_mlp", "vamp"),
    "hvae": ("hvae", "standard_normal"),
    "hvae+vamp": ("hvae", "vamp"),
}


def measure(repo, model, threads, args) -> dict:
    architecture, prior = MODELS[model]
    command = [
        sys.executable, os.path.join(HERE, "epoch_speed.py"), "--repo", repo,
        "--architecture", architecture, "--prior", prior, "--threads", str(threads),
        "--epochs", str(args.epochs), "--mixed-precision", args.mixed_precision,
    ]  # fmt: skip
    env = dict(os.environ)
    if args.no_onednn:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=os.path.dirname(HERE))
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, choices=(1, 2), default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="per process; the first untimed")
    parser.add_argument("--mixed-precision", default="float32")
    parser.add_argument("--no-onednn", action="store_true")
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for threads in args.threads:
            runs = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name in ("before", "after"):
                    result = measure(getattr(args, name), model, threads, args)
                    runs[name].append(result)
                    print(json.dumps({"code": name, **result}), flush=True)
            med = {
                name: {
                    key: statistics.median(r[key] for r in results)
                    for key in ("epoch_seconds", "pass_examples_per_second", "around_pass_fraction")
                }
                for name, results in runs.items()
            }
            rows.append((model, threads, med, runs["after"][0]["cpu"]))
    kernels = "Eigen (TF_ENABLE_ONEDNN_OPTS=0)" if args.no_onednn else "oneDNN"
    print(f"\n{args.mixed_precision}, {kernels}, {args.repeats} run(s) of each, medians\n")
    print(
        "| model | threads | epoch s before | epoch s after | epoch speed-up "
        "| pass ex/s before | pass ex/s after | pass speed-up | around the pass after | CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, threads, med, cpu in rows:
        b, a = med["before"], med["after"]
        print(
            f"| {model} | {threads} | {b['epoch_seconds']:.2f} | {a['epoch_seconds']:.2f} "
            f"| {b['epoch_seconds'] / a['epoch_seconds']:.2f}x "
            f"| {b['pass_examples_per_second']:,.0f} | {a['pass_examples_per_second']:,.0f} "
            f"| {a['pass_examples_per_second'] / b['pass_examples_per_second']:.2f}x "
            f"| {a['around_pass_fraction']:.0%} | {cpu} |"
        )


if __name__ == "__main__":
    main()
