"""Fuzz `serve_signature.py run` with malformed inputs (issue 15).

    python benchmarks/fuzz_serve_signature.py [--cases 1000] [--seed 0] [--seconds 600]

Exports a small untrained VAE (28x28x1, 4 latents) once, then calls
`serve_signature.main(["run", MODEL, ...])` in this process on seeded random
inputs: `.npy` arrays of random dtypes, ranks, sizes and values (NaN, inf,
negatives, values above 255) for `--images`, `--input z=`, `--input noise=`
and `--input count=`, and image files of random bytes, truncated PNGs and
PNGs of random sizes and modes. Each case ends one of three ways:

- refused: exit 2 with a one-line message;
- answered: exit 0, which is right only if an independent check (below, not
  the runner's own) says the input was valid;
- traceback: any exception escaping `main`.

It prints the counts and exits 1 on any traceback or wrong exit-0 answer.
"""

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import serve_signature  # noqa: E402

SHAPE = (28, 28, 1)
LATENT = 4
DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64"]
DTYPES += ["bool", "complex64"]
DIMS = [0, 1, 2, 3, 4, 27, 28, 29]


def export_model(out_dir: str) -> str:
    from keras_vae.export.writer import export_all
    from keras_vae.vae import VAE

    model = VAE(latent_dim=LATENT, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (20, *SHAPE), dtype=np.uint8)
    return export_all(model, out_dir, "vae", images)["tflite"]["float32"]


def random_array(rng, rank=None):
    dtype = np.dtype(rng.choice(DTYPES))
    rank = int(rng.integers(0, 6)) if rank is None else rank
    shape = tuple(int(rng.choice(DIMS)) for _ in range(rank))
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.normal(size=shape) + 1j).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        value = rng.normal(0, 100, shape)
        if value.size and rng.random() < 0.3:
            value.flat[int(rng.integers(value.size))] = rng.choice([np.nan, np.inf, -np.inf])
        return value.astype(dtype)
    info = np.iinfo(dtype)
    low, high = (0, 256) if rng.random() < 0.5 else (info.min, info.max)
    return rng.integers(max(low, info.min), min(high, info.max), shape, dtype=dtype, endpoint=True)


def images_valid(a) -> bool:
    """Pixels the model may take: integers in [0, 255], shape (n >= 1, 28, 28, 1)."""
    return (
        a.ndim == 4
        and a.shape[0] >= 1
        and a.shape[1:] == SHAPE
        and np.issubdtype(a.dtype, np.integer)
        and a.min() >= 0
        and a.max() <= 255
    )


def latents_valid(a) -> bool:
    finite_real = np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    return (
        a.ndim == 2
        and a.shape[0] >= 1
        and a.shape[1] == LATENT
        and finite_real
        and a.dtype != bool
        and np.isfinite(a.astype(np.float64)).all()
        and (np.issubdtype(a.dtype, np.floating) or np.abs(a).max() < 2**24)
    )


def make_case(rng, tmp: str, i: int):
    """(argv after the model path, whether a correct runner answers it)."""
    kind = rng.choice(["images_npy", "z", "noise", "count", "file_bytes", "png"])
    path = os.path.join(tmp, f"case{i}")
    if kind in ("images_npy", "z", "noise"):
        a = random_array(rng, rank=int(rng.choice([0, 1, 2, 3, 4, 4, 4, 5])))
        np.save(path + ".npy", a)
        if kind == "images_npy":
            sig = rng.choice(["score", "reconstruct", "serving_default"])
            return ["--signature", sig, "--images", path + ".npy"], images_valid(a)
        sig = "decode" if kind == "z" else "generate_from_noise"
        return ["--signature", sig, "--input", f"{kind}={path}.npy"], latents_valid(a)
    if kind == "count":
        n = int(rng.choice([-(2**40), -1, 0, 1, 7, 10_000, 10_001, 2**31, 2**63 - 1]))
        return ["--signature", "generate", "--input", f"count={n}"], 1 <= n <= 10_000
    if kind == "file_bytes":
        with open(path + ".png", "wb") as f:
            f.write(rng.bytes(int(rng.integers(0, 2000))))
        return ["--signature", "score", "--images", path + ".png"], False
    # A real PNG: random size, mode, maybe truncated.
    side = int(rng.choice([27, 28, 28, 28, 29]))
    mode = str(rng.choice(["L", "RGB", "RGBA", "LA", "P", "1", "I;16"]))
    pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = Image.fromarray(pixels.astype(np.uint16) * 257) if mode == "I;16" else image
    if mode not in ("L", "I;16"):
        image = image.convert(mode)
    image.save(path + ".png")
    truncated = rng.random() < 0.3
    if truncated:
        data = open(path + ".png", "rb").read()
        with open(path + ".png", "wb") as f:
            f.write(data[: int(rng.integers(0, len(data) // 2))])  # pixels missing for sure
    grey = mode in ("L", "LA", "1", "I;16")
    return ["--signature", "score", "--images", path + ".png"], (
        side == 28 and grey and not truncated
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    counts = {"refused": 0, "answered": 0, "traceback": 0, "wrong exit 0": 0}
    examples = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = export_model(os.path.join(tmp, "export"))
        start = time.perf_counter()
        done = 0
        for i in range(args.cases):
            if time.perf_counter() - start > args.seconds:
                break
            argv, valid = make_case(rng, tmp, i)
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = serve_signature.main(["run", model, *argv])
            except SystemExit as e:  # argparse
                code = e.code
            except Exception as e:  # noqa: BLE001  (what the fuzz is looking for)
                counts["traceback"] += 1
                examples.setdefault("traceback", (argv, repr(e)))
                done += 1
                continue
            if code == 0:
                counts["answered"] += 1
                if not valid:
                    counts["wrong exit 0"] += 1
                    examples.setdefault("wrong exit 0", (argv, out.getvalue()[:300]))
            else:
                counts["refused"] += 1
                if valid:
                    examples.setdefault("refused a valid input", (argv, err.getvalue()[:300]))
            done += 1
    print(f"{done} cases in {time.perf_counter() - start:.0f} s (seed {args.seed}): {counts}")
    for name, example in examples.items():
        print(f"  {name}: {example}")
    return 1 if counts["traceback"] or counts["wrong exit 0"] else 0


if __name__ == "__main__":
    sys.exit(main())
