"""The repository's `python -m export`: a thin wrapper, not installed.

The exporters live in `keras_vae.export` (installed with the package, also as
the console script `keras-vae-export`). A top-level package named `export`
in site-packages would shadow, or be shadowed by, a user's own module of that
name, so only `keras_vae` is installed; this folder keeps the repository's
`python -m export` form working from its root.
"""
