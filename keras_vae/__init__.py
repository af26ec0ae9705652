"""keras-vae: variational autoencoders in Keras 3 with TFP distributions.

`import keras_vae` makes `keras.models.load_model` reload a saved `VAE` or
`HVAE`: the classes register themselves with Keras when their modules load.
They load with Keras: at once if Keras is already imported, otherwise when
the program first imports it. So `import keras_vae` alone imports no
TensorFlow, which keeps every command's `--help` fast and the LiteRT runner
(`keras_vae.export.runner`) free of TensorFlow, and the names below load on
first use.

Example:

```python
import keras
import keras_vae

model = keras_vae.VAE(latent_dim=2)
assert isinstance(model, keras.Model)
```
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"
__all__ = [
    "VAE",
    "HVAE",
    "available_likelihoods",
    "available_priors",
    "register_likelihood",
    "register_prior",
]
_HOMES = {
    "VAE": "keras_vae.vae",
    "HVAE": "keras_vae.hvae",
    "available_likelihoods": "keras_vae.likelihoods",
    "register_likelihood": "keras_vae.likelihoods",
    "available_priors": "keras_vae.priors",
    "register_prior": "keras_vae.priors",
}
# What registers the package's classes for `keras.models.load_model`.
_REGISTERING_MODULES = ("keras_vae.optimizers", "keras_vae.hvae")


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def _register_with_keras() -> None:
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            # Keras was imported by one of these modules' own imports, half-way
            # through: that import registers the classes when it completes.
            pass


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Registers the package's classes right after `keras` itself is imported.

    It finds nothing itself: for `keras`, it asks the other finders and wraps
    the loader so that the registration runs once Keras has loaded whole.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_with_keras()

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())
