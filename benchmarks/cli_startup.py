"""How long each command line takes to answer `--help` (issue 16: under 1 s).

    python benchmarks/cli_startup.py [--repeats 5]

Runs every CLI's `--help` in a fresh process, `--repeats` times, and prints
the median wall time of each with the CPU model. The commands parse their
flags before TensorFlow loads, so this is Python start-up plus argparse.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (
    ["train.py"],
    ["-m", "keras_vae.evaluate"],
    ["-m", "keras_vae.visualize"],
    ["-m", "keras_vae.generate"],
    ["-m", "export"],
    ["serve_signature.py"],
)


def cpu_model() -> str:
    """The CPU's name, family and model, and its widest vector extension:
    "AMD EPYC (family 25 model 17, avx512_bf16)" is a Genoa, model 1 a Milan."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = fields.get("flags", "").split()
    widest = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), "")
    return (
        f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}, {widest or 'no AVX2'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    for command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, *command, "--help"], cwd=REPO, capture_output=True, check=True
            )
            times.append(time.perf_counter() - start)
        print(f"{' '.join(command) + ' --help':40s} median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
