"""Speed of the importance-weighted bound: decoder passes per second.

    python benchmarks/iw_speed.py [--run runs/RUN | --preset NAME] [--windows 5] [--images 40]
        [--samples 100]

For float32 and mixed_bfloat16, and for the decoder as Keras builds it and
in the fused inference form that `keras_vae.evaluation` uses on CPU
(`keras_vae.decoder_forms.fused_for_inference`), it times the compiled
`log_importance_weights` step on `--images` x `--samples` decoder passes per
call, in alternating windows in one process. It prints the median passes/s of
each, the time that projects to for the K=1000 bound on 10,000 test images
(10 million passes, the encoder and the log-sum-exp included), and the
largest difference of the per-image bound between the forms. For a
two-level model it also times the fused form with q(z1|x,z2) run whole on K
tiled copies of each image (how the bound ran before
`networks.z1_encoder_parts`). Without `--run` or `--preset` it times an
untrained model of the default architecture (the timing does not depend on
the weights).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_vae import decoder_forms, precision, runs  # noqa: E402
from keras_vae.vae import VAE  # noqa: E402

PASSES_IN_TABLE_EVALUATION = 10_000 * 1_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="A run directory (default: an untrained default model).")
    source.add_argument("--preset", help="A shipped preset's name or a preset folder.")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="Calls per window.")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()

    if args.run:
        _, model = runs.load_run(args.run)
    elif args.preset:
        model = VAE.from_preset(args.preset)
    else:
        model = VAE(seed=0)
        model.build()
    shape = model.image_shape
    images = tf.constant(np.random.default_rng(0).random((args.images, *shape)).astype(np.float32))
    samples = tf.constant(args.samples)
    passes = args.images * args.samples

    steps = {}
    for policy in ("float32", "mixed_bfloat16"):
        copy = precision.with_policy(model, policy)
        fused = copy.with_decoder(decoder_forms.fused_for_inference(copy.decoder))
        forms = [("keras", copy), ("fused", fused)]
        if model.levels == 2:
            tiled = copy.with_decoder(fused.decoder)
            tiled._encode_z1_samples = tiled._encode_z1_tiled
            forms.append(("fused, z1 on tiled images", tiled))
        for form, variant in forms:
            step = tf.function(variant.log_importance_weights)
            step(images, samples)  # trace and compile
            steps[(policy, form)] = (step, variant)

    rates = {key: [] for key in steps}
    for _ in range(args.windows):
        for key, (step, _) in steps.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                step(images, samples).numpy()
            rates[key].append(args.calls * passes / (time.perf_counter() - start))

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "tensorflow": tf.__version__,
        "passes_per_call": passes,
        "forms": {},
    }
    for (policy, form), values in rates.items():
        median = statistics.median(values)
        result["forms"][f"{policy} {form}"] = {
            "passes_per_s": round(median),
            "spread": [round(min(values)), round(max(values))],
            "projected_k1000_10k_s": round(PASSES_IN_TABLE_EVALUATION / median),
        }
    for policy in ("float32", "mixed_bfloat16"):
        bounds = []
        for (each, _), (step, copy) in steps.items():
            if each != policy:
                continue
            # The same seed for every form: the same samples, only the form differs.
            copy.seed_generator.state.assign(tf.zeros_like(copy.seed_generator.state))
            bounds.append(tf.reduce_logsumexp(step(images, samples), axis=0).numpy())
        spread = np.max(bounds, axis=0) - np.min(bounds, axis=0)
        result[f"max_bound_difference_nats {policy}"] = float(spread.max())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
