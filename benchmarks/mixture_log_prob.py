"""The VampPrior's density: TFP's broadcast form against the matrix-product form.

    python benchmarks/mixture_log_prob.py [--components 500] [--repeats 10]

A `gated_mlp` VAE (40 latents, 300 hidden units) with a VampPrior of
`--components` pseudo-inputs, random weights, float32 networks. It times, in
seconds per call (the mean of `--repeats` after one warm-up call):
- the prior's `log_prob` alone, at one IW chunk (40 samples x 100 images);
- one chunk of the importance-weighted bound (`log_importance_weights`, what
  `keras_vae.evaluation` runs 125 times per 100 images at K=5000);
- one training step at batch 100 (`train_step`, with the gradient);
each with TFP's `MixtureSameFamily.log_prob` (`priors.portable_densities()`)
and with `priors.DiagonalGaussianMixture`'s, and the largest difference of
the two densities (nats). Then the CPU model and TensorFlow's thread counts.
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

from keras_vae import priors  # noqa: E402
from keras_vae.vae import VAE  # noqa: E402


def seconds(fn, args, repeats):
    tf.nest.map_structure(np.asarray, fn(*args))  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        tf.nest.map_structure(np.asarray, fn(*args))
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    model = VAE(
        latent_dim=40,
        architecture="gated_mlp",
        hidden_units=300,
        prior="vamp",
        prior_components=args.components,
        seed=0,
    )
    model.compile("adam")
    rng = np.random.default_rng(0)
    images = tf.constant((rng.random((100, 28, 28, 1)) < 0.3).astype(np.float32))
    model.negative_elbo(images)
    z = tf.random.stateless_normal([40, 100, 40], seed=(0, 1))
    cases = {
        "prior log_prob, 4000 points": (lambda z: model.prior_distribution().log_prob(z), (z,)),
        "IW chunk, 40 samples x 100 images": (
            lambda x: model.log_importance_weights(x, 40),
            (images,),
        ),
        "train step, batch 100": (model.train_step, (images,)),
    }
    with priors.portable_densities():
        tfp_values = model.prior_distribution().log_prob(z).numpy()
    difference = np.abs(model.prior_distribution().log_prob(z).numpy() - tfp_values).max()
    print(f"VampPrior with {args.components} pseudo-inputs, gated_mlp, float32 networks")
    print("| what | TFP's log_prob (s) | matrix products (s) | speed-up |")
    print("|---|---|---|---|")
    for name, (fn, inputs) in cases.items():
        with priors.portable_densities():
            before = seconds(tf.function(fn), inputs, args.repeats)
        after = seconds(tf.function(fn), inputs, args.repeats)
        print(f"| {name} | {before:.4f} | {after:.4f} | {before / after:.1f}x |")
    print(f"Largest density difference: {difference:.2e} nats")
    threads = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    print(f"CPU: {cpu_model()}; TF threads (intra, inter; 0 = all cores): {threads}")


if __name__ == "__main__":
    main()
