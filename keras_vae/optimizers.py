"""`AdamNormGrad`: Adam on gradients divided by their L2 norm (`--normalize-gradients`).

The VampPrior paper's optimiser (jmtomczak/vae_vampprior, `AdamNormGrad`):
each parameter's gradient is divided by its own L2 norm before Adam's
update, so every tensor moves by a step of Adam's size whatever its
gradient's scale.
"""

from __future__ import annotations

import keras

# Keeps an all-zero gradient at zero instead of dividing by zero (the paper's 1e-7).
NORM_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="keras_vae")
class AdamNormGrad(keras.optimizers.Adam):
    """`keras.optimizers.Adam` applied to `g / (||g||_2 + 1e-7)` for each gradient g.

    Example:

    ```python
    import keras_vae
    from keras_vae.optimizers import AdamNormGrad

    model = keras_vae.VAE(latent_dim=2)
    model.compile(optimizer=AdamNormGrad(5e-4))
    ```
    """

    def _clip_gradients(self, grads):
        # Keras's hook for per-gradient transforms, before clipping and the update.
        grads = [
            None if g is None else g / (keras.ops.sqrt(keras.ops.sum(g * g)) + NORM_EPSILON)
            for g in grads
        ]
        return super()._clip_gradients(grads)
