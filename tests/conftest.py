import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_vae import data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from float32 and a clean Keras session."""
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")


def require_fashion_mnist() -> str:
    """The official Fashion-MNIST files; required in CI, skipped elsewhere."""
    path = data.DEBIAN_FASHION_MNIST_DIR
    if not os.path.isfile(os.path.join(path, "t10k-images-idx3-ubyte.gz")):
        message = (
            f"real Fashion-MNIST files not found in {path}: `apt-get install dataset-fashion-mnist`"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the real-data tests)")
        pytest.skip(message)
    return path


@pytest.fixture
def fashion_mnist_dir():
    return require_fashion_mnist()


def random_images(n, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def assert_saving_round_trip(model, images, tmp_path):
    """The shared harness: `.keras` and `get_config` round trips of a VAE."""
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(images).numpy(), reloaded(images).numpy())
    for a, b in zip(model.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if model.optimizer is not None and model.optimizer.built:
        assert int(reloaded.optimizer.iterations) == int(model.optimizer.iterations)
        for a, b in zip(model.optimizer.variables, reloaded.optimizer.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    return reloaded
