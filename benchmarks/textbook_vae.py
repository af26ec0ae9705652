"""The textbook VAE, standalone: the yardstick of the speed benchmarks.

    python benchmarks/textbook_vae.py --epochs 3

The TensorFlow CVAE tutorial's architecture (https://www.tensorflow.org/
tutorials/generative/cvae) written as a plain Keras 3 model: `reduce_mean`
losses in a custom `train_step`, numpy input, float32, batch 128. Run as a
script it reads Fashion-MNIST from the official IDX files with numpy, trains
`--epochs` epochs and prints the test negative ELBO. It imports nothing of
`keras_vae`, so that its whole-process time is what a user's own script costs.
"""

import argparse
import gzip
import os
import sys

import keras
import numpy as np
import tensorflow as tf

IDX_DIR = "/usr/share/datasets/fashion-mnist"


class ReferenceVAE(keras.Model):
    """The textbook VAE: https://www.tensorflow.org/tutorials/generative/cvae, Keras 3."""

    def __init__(self, latent_dim=16):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(2 * latent_dim),
            ]
        )
        self.decoder = keras.Sequential(
            [
                keras.Input((latent_dim,)),
                keras.layers.Dense(7 * 7 * 32, activation="relu"),
                keras.layers.Reshape((7, 7, 32)),
                keras.layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2DTranspose(1, 3, padding="same"),
            ]
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def negative_elbo(self, x):
        mean, log_var = tf.split(self.encoder(x), 2, axis=-1)
        z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
        logits = self.decoder(z)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
        rec = tf.reduce_mean(tf.reduce_sum(bce, [1, 2, 3]))
        kl_terms = 1 + log_var - tf.square(mean) - tf.exp(log_var)
        kl = tf.reduce_mean(-0.5 * tf.reduce_sum(kl_terms, 1))
        return rec + kl

    def train_step(self, x):
        with tf.GradientTape() as tape:
            loss = self.negative_elbo(x)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, x):
        self.loss_tracker.update_state(self.negative_elbo(x))
        return {"loss": self.loss_tracker.result()}


def read_idx_images(path) -> np.ndarray:
    """An IDX image file -> float32 (N, 28, 28, 1) in [0, 1]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28, 1).astype("float32") / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    train = read_idx_images(os.path.join(IDX_DIR, "train-images-idx3-ubyte.gz"))
    test = read_idx_images(os.path.join(IDX_DIR, "t10k-images-idx3-ubyte.gz"))
    keras.utils.set_random_seed(0)
    model = ReferenceVAE()
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(train, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    loss = model.evaluate(test, batch_size=args.batch_size, verbose=0, return_dict=True)["loss"]
    print(f"Test negative ELBO: {loss:.2f} nats")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
