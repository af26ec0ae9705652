"""The fixed cost of a training run: the package against the textbook script.

    python benchmarks/fixed_cost.py [--repeats 3] [--epochs 1 3]

Whole processes, alternating, each run `--repeats` times per epoch count:
(a) the package: `train.py --dataset fashion_mnist --epochs E --no-export
    --iw-samples 0 --seed 0` into a fresh run directory (data, pipeline,
    model build, per-epoch TensorBoard pictures, test record, model.keras,
    pictures, report);
(b) the textbook: `benchmarks/textbook_vae.py --epochs E` (numpy IDX input,
    fit, evaluate);
(c) `python -c "import tensorflow"`, the floor of both.
From the medians, per epoch = (T(E2) - T(E1)) / (E2 - E1) and fixed cost =
T(E1) - E1 x per epoch. The issue's target is the package's fixed cost minus
TensorFlow's import under 10 s. Prints the CPU model and the test -ELBO each
process reported.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cli_startup import REPO, cpu_model  # noqa: E402


def timed(command) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    found = re.findall(r"Test negative ELBO: ([0-9.]+)", done.stdout)
    return elapsed, (found[-1] if found else "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs=2, default=(1, 3))
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    scratch = tempfile.mkdtemp(prefix="fixed_cost_")
    times = {}
    try:
        for repeat in range(args.repeats):
            for epochs in args.epochs:
                run_dir = os.path.join(scratch, f"run-{repeat}-{epochs}")
                commands = {
                    "package": [sys.executable, "train.py", "--dataset", "fashion_mnist",
                                "--epochs", str(epochs), "--no-export", "--iw-samples", "0",
                                "--seed", "0", "--output-dir", run_dir],
                    "textbook": [sys.executable, "benchmarks/textbook_vae.py",
                                 "--epochs", str(epochs)],
                }  # fmt: skip
                for name, command in commands.items():
                    elapsed, elbo = timed(command)
                    times.setdefault((name, epochs), []).append(elapsed)
                    print(f"{name:8s} E={epochs} {elapsed:6.1f} s  test -ELBO {elbo}", flush=True)
            elapsed, _ = timed([sys.executable, "-c", "import tensorflow"])
            times.setdefault(("import tensorflow", 0), []).append(elapsed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    tf_import = median[("import tensorflow", 0)]
    e1, e2 = args.epochs
    print(f"median `import tensorflow`: {tf_import:.1f} s")
    for name in ("package", "textbook"):
        per_epoch = (median[(name, e2)] - median[(name, e1)]) / (e2 - e1)
        fixed = median[(name, e1)] - e1 * per_epoch
        print(
            f"{name:8s} per epoch {per_epoch:5.1f} s, fixed {fixed:5.1f} s, "
            f"fixed beyond `import tensorflow` {fixed - tf_import:5.1f} s"
        )


if __name__ == "__main__":
    main()
