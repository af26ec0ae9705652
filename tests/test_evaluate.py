import json
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import (
    GaussianToy,
    assert_iw_bound_converges_from_above,
    assert_saving_round_trip,
)

from keras_vae import cli, decoder_forms, evaluation, precision
from keras_vae.config import TrainConfig
from keras_vae.vae import VAE

tfd = tfp.distributions


class LinearGaussian(GaussianToy):
    """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I): log p(x) is known exactly.

    The encoder is the exact posterior mean with the *diagonal* of the exact
    posterior covariance, so q != p(z|x) and the bounds are strict.
    """

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(4, 2)).astype(np.float32)
        self.b = rng.normal(size=4).astype(np.float32)
        self.latent_dim = 2
        decoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        decoder.set_weights([self.w.T, self.b])  # z -> W z + b
        super().__init__(seed, decoder, s=0.5)
        cov = np.linalg.inv(np.eye(2) + self.w.T @ self.w / self.s**2)
        self.post_cov, self.gain = cov, cov @ self.w.T / self.s**2

    def encode(self, x, training=False):
        mean = tf.matmul(tf.cast(x, tf.float32) - self.b, self.gain.T.astype(np.float32))
        log_var = tf.math.log(
            tf.broadcast_to(np.diag(self.post_cov).astype(np.float32), tf.shape(mean))
        )
        return mean, log_var

    def log_importance_weights(self, images, num_samples, labels=None):
        x = tf.cast(images, tf.float32)
        return VAE._log_weights(self, x, *self.encode(x), num_samples)

    def true_log_likelihood(self, x):
        cov = self.w @ self.w.T + self.s**2 * np.eye(4)
        return (
            tfd.MultivariateNormalFullCovariance(self.b, cov.astype(np.float32)).log_prob(x).numpy()
        )


def test_iw_bound_converges_to_the_true_likelihood_from_above():
    toy = LinearGaussian()
    x = (toy.b + np.random.default_rng(1).normal(size=(200, 4)) * 1.5).astype(np.float32)
    true_nll = -toy.true_log_likelihood(x).mean()
    assert_iw_bound_converges_from_above(toy, x, true_nll, tolerance=0.02)


def test_chunking_does_not_change_the_bound():
    toy = LinearGaussian(seed=3)
    x = tf.constant(toy.b[None].repeat(50, 0) + 1.0)
    small = evaluation.importance_weighted_nll(toy, x, 500, chunk=100).numpy().mean()
    large = evaluation.importance_weighted_nll(toy, x, 500, chunk=100_000).numpy().mean()
    assert abs(small - large) < 0.05  # different draws, same estimate
    # Every chunk reports its progress: 50 images x 500 samples in chunks of 100
    # decoder passes is 2 samples per chunk, 250 reports, the last at K.
    done = []
    evaluation.importance_weighted_nll(toy, x, 500, chunk=100, on_chunk=done.append)
    assert len(done) == 250 and done == sorted(done) and done[-1] == 500


def test_off_a_terminal_the_progress_is_ten_lines(capsys):
    """In a log file (pytest's captured stdout is not a terminal) a long
    evaluation says that it started, then reports each tenth once, with the
    time left, not a redrawn bar per chunk."""
    model = VAE(latent_dim=2, seed=0)
    images = np.random.default_rng(0).random((40, 28, 28, 1)).astype(np.float32)
    evaluation.evaluate(model, images, iw_samples=300, batch_size=4, chunk=100)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("IW bound")]
    assert len(lines) == 11, lines
    assert lines[0] == "IW bound: started on 40 images, K=300"
    assert lines[1].startswith("IW bound: 4/40 images (10%)") and "left" in lines[1]
    assert lines[-1].startswith("IW bound: 40/40 images (100%)") and "iw_nll" in lines[-1]
    evaluation.evaluate(model, images[:4], iw_samples=10, verbose=0)
    assert capsys.readouterr().out == ""


def test_on_a_terminal_the_bar_shows_the_running_bound(capsys, monkeypatch):
    """On a terminal the bar's `iw_nll` is the mean bound over the images done
    so far, shown as it is, not averaged again over the batches (which
    weighs the first batches' means most)."""

    def fake_bound(model, batch, num_samples, chunk, labels, on_chunk):
        on_chunk(num_samples)
        return tf.reduce_mean(batch, axis=[1, 2, 3]) * 1000.0  # known per-image figures

    monkeypatch.setattr(evaluation, "importance_weighted_nll", fake_bound)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    images = np.concatenate([np.zeros((8, 28, 28, 1)), np.ones((24, 28, 28, 1))])
    result = evaluation.evaluate(VAE(latent_dim=2, seed=0), images.astype(np.float32), 5, 8)
    shown = {float(v) for v in re.findall(r"iw_nll: ([0-9.]+)", capsys.readouterr().out)}
    # After each batch of 8: 0 black images' mean, then 1000 per white image.
    running = {round(1000 * n / (8 * (b + 1)), 4) for b, n in enumerate([0, 8, 16, 24])}
    assert shown and shown <= running, (shown, running)
    assert result["iw_nll_nats"] == pytest.approx(750.0)


def _iw_bounds(policy):
    """log-sum-exp of the IW weights through the Keras and the fused decoder,
    the same weights and the same samples."""
    model = VAE(latent_dim=4, seed=0, dtype=policy)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in model.weights])
    images = tf.constant(rng.random((6, 28, 28, 1)).astype(np.float32))
    bounds = []
    for form in (model, model.with_decoder(decoder_forms.fused_for_inference(model.decoder))):
        form.seed_generator.state.assign(tf.zeros_like(form.seed_generator.state))
        weights = form.log_importance_weights(images, 20)
        bounds.append(tf.reduce_logsumexp(weights, axis=0).numpy())
    return model, bounds


def test_iw_bound_with_the_fused_decoder_is_the_keras_decoders_in_float32():
    model, (keras_form, fused_form) = _iw_bounds("float32")
    assert np.abs(keras_form).min() > 100.0  # hundreds of nats per image
    np.testing.assert_allclose(fused_form, keras_form, rtol=1e-6)
    # evaluate's own path on this CPU takes the fused form.
    fast = evaluation.inference_model(model)
    assert isinstance(fast.decoder.layers[-1], decoder_forms._TapSumConvolution)
    assert fast.encoder is model.encoder and fast.prior_layer is model.prior_layer


@pytest.mark.skipif(
    not precision.cpu_has_bfloat16(),
    reason="bfloat16 is emulated on this CPU (no AVX512-BF16/AMX): TensorFlow's Eigen "
    "kernels round it differently, and both decoder forms land 1.5-1.7% from float32 "
    "there (measured with TF_ENABLE_ONEDNN_OPTS=0), so their agreement is not a "
    "property of the rewrite. `auto` never picks bfloat16 on such a CPU.",
)
def test_iw_bound_with_the_fused_decoder_is_the_keras_decoders_in_native_bfloat16():
    _, (reference, _) = _iw_bounds("float32")
    _, (keras_form, fused_form) = _iw_bounds("mixed_bfloat16")
    # The same samples through the same function: the two forms differ by
    # bfloat16 rounding of each of the 784 pixels' logits, far less than
    # either differs from float32 (0.8% here, random weights).
    np.testing.assert_allclose(fused_form, keras_form, rtol=1e-3)
    assert np.max(np.abs(keras_form - reference) / np.abs(reference)) < 2**-6


def test_active_units_and_kl_per_dimension_see_dead_dimensions():
    model = VAE(latent_dim=4, seed=0)
    layer = model.encoder.get_layer("posterior_params")
    kernel, bias = layer.get_weights()
    for dead in (1, 3):  # mean and log-variance exactly the prior's
        kernel[:, [dead, 4 + dead]] = 0.0
        bias[[dead, 4 + dead]] = 0.0
    layer.set_weights([kernel, bias])
    images = np.random.default_rng(0).random((300, 28, 28, 1)).astype(np.float32)
    result = evaluation.evaluate(model, images, iw_samples=2, verbose=0)
    means, _ = evaluation.posterior_statistics(model, images)
    expected = int((np.var(means, axis=0) > 0.01).sum())
    assert result["active_units"] == expected <= 2
    assert result["kl_per_dim_nats"][1] == 0.0 and result["kl_per_dim_nats"][3] == 0.0
    assert result["iw_bits_per_dim"] == pytest.approx(result["iw_nll_nats"] / (784 * np.log(2)))


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_bad_iw_samples(k):
    with pytest.raises(ValueError, match=f"Expected a positive integer. Received: iw_samples={k}"):
        evaluation.importance_weighted_nll(LinearGaussian(), tf.zeros((2, 4)), k)
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it before any work
        cli.main(["evaluate", "--model", "/nonexistent", "--iw-samples", "0"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "options",
    [
        {"objective": "iwae", "iw_k": 4},
        {"kl_warmup_steps": 30},
        {"free_bits": 0.5},
        {"beta": 4.0},
    ],
)
def test_objectives_train_round_trip_and_export(options, real_images, tmp_path):
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=6, seed=0, **options)
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=100.0))
    first = model.evaluate(real_images, batch_size=500, verbose=0, return_dict=True)["loss"]
    model.fit(real_images, batch_size=100, epochs=2, verbose=0)
    after = model.evaluate(real_images, batch_size=500, verbose=0, return_dict=True)["loss"]
    assert after < first - 50  # training lowers the negative ELBO
    reloaded = assert_saving_round_trip(model, real_images[:4], tmp_path)
    assert {k: reloaded.get_config()[k] for k in options} == options
    from keras_vae.export import saved_model

    path = saved_model.export_saved_model(model, str(tmp_path / "sm" / "vae"))
    served = tf.saved_model.load(path).signatures["score"](
        images=tf.constant(np.round(real_images[:4] * 255).astype(np.uint8))
    )
    expected = model.negative_elbo(real_images[:4], sample=False)["loss"].numpy()
    np.testing.assert_allclose(served["negative_elbo"].numpy(), expected, rtol=1e-5)


def test_kl_warmup_ramps_the_weight():
    model = VAE(latent_dim=2, beta=2.0, kl_warmup_steps=10)
    model.compile(keras.optimizers.SGD(0.0))
    assert float(model.kl_weight()) == 0.0
    model.optimizer.iterations.assign(5)
    assert float(model.kl_weight()) == pytest.approx(1.0)
    model.optimizer.iterations.assign(50)
    assert float(model.kl_weight()) == pytest.approx(2.0)


def test_evaluate_cli_updates_metrics(real_images, tmp_path, capsys):
    import dataclasses

    run = tmp_path / "run"
    run.mkdir()
    model = VAE(latent_dim=4, seed=0)
    model.compile("adam")
    model.fit(real_images, batch_size=100, epochs=1, verbose=0)
    model.save(str(run / "model.keras"))
    config = TrainConfig(latent_dim=4, binarize="static", test_split="test[:200]", data_dir="/x")
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    (run / "metrics.json").write_text(json.dumps({"test": {"negative_elbo_nats": 1.0}}))
    assert cli.main(["evaluate", "--model", str(run), "--iw-samples", "20"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] == {"negative_elbo_nats": 1.0}  # merged, not replaced
    ev = metrics["evaluation"]
    assert ev["num_images"] == 200 and ev["iw_samples"] == 20
    assert ev["iw_nll_nats"] < ev["negative_elbo_nats"]
    assert len(ev["kl_per_dim_nats"]) == 4
    # bfloat16 networks (the `auto` choice on CPUs with bfloat16) bound alike.
    bounds = {}
    for policy in ("float32", "mixed_bfloat16"):
        args = ["--model", str(run), "--iw-samples", "50", "--precision", policy]
        assert cli.main(["evaluate", *args]) == 0
        ev = json.loads((run / "metrics.json").read_text())["evaluation"]
        assert ev["precision"] == policy
        bounds[policy] = ev["iw_nll_nats"]
    assert abs(bounds["float32"] - bounds["mixed_bfloat16"]) < 1.0
    assert cli.main(["evaluate", "--model", str(tmp_path)]) == 2
    assert "holds no model.keras" in capsys.readouterr().err
