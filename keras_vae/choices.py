"""The closed sets of names a user picks from, in one place with no imports.

The command lines build their `--help` and check their flags from these
before TensorFlow loads; the modules that implement each choice import the
same tuple (the likelihood and prior registries are checked against theirs
by `tests/test_config.py`).
"""

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
OBJECTIVES = ("elbo", "iwae")
BINARIZE_MODES = ("none", "dynamic", "static")
ARCHITECTURES = ("conv", "gated_mlp", "hvae", "conv_hvae")
# The two-level ones (keras_vae.hvae.HVAE).
TWO_LEVEL_ARCHITECTURES = ("hvae", "conv_hvae")
# Where generated images' latents come from (keras_vae.samplers).
SAMPLERS = ("prior", "gmm")
# The built-in entries of the likelihood and prior registries.
LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
PRIORS = ("mixture", "standard_normal", "vamp")
# The VampPrior's pseudo-input forms (keras_vae.priors.VampPrior.forms).
PSEUDO_INPUTS = ("sigmoid", "hardtanh")
# How a preset's weights file stores the weights (keras_vae.presets).
PRESET_WEIGHTS = ("float32", "float16")
PICTURES = (
    "samples",
    "reconstructions",
    "traversals",
    "interpolations",
    "manifold",
    "latent_space",
    "curves",
    "anomaly",
)
