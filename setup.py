"""keras-vae: variational autoencoders in Keras 3 with TFP distributions."""

from setuptools import find_packages, setup

setup(
    name="keras-vae",
    version="0.1.0",
    description="Variational autoencoders in Keras 3 with TensorFlow Probability, "
    "trained with tf.distribute and exported for TF Serving and LiteRT.",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_vae", "keras_vae.*", "export", "export.*"]),
    py_modules=["train", "serve_signature"],
    # Lower bounds are the versions the test suite ran on.
    install_requires=[
        "tensorflow>=2.21",
        "tensorflow-probability[tf]>=0.25",
        "keras>=3.15",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6",  # TFDS 4.9.10 imports it when preparing data.
        "tensorboard>=2.21",
        "numpy>=2",
        "ai-edge-litert>=2.3",  # runs the .tflite files without TensorFlow
        "tensorflow-serving-api>=2.21",  # PredictRequest protos, gRPC client
        "grpcio>=1.60",
        "pillow>=10",  # reads image files in serve_signature.py
        "matplotlib>=3.8",  # plots (headless Agg backend)
    ],
    extras_require={"test": ["pytest>=8", "ruff>=0.6", "scipy>=1.10"]},
)
