"""The command lines: `keras-vae COMMAND ...`, flags first, TensorFlow after.

    keras-vae prepare ...      python -m keras_vae.prepare
    keras-vae train ...        python train.py ...             keras-vae-train ...
    keras-vae evaluate ...     python -m keras_vae.evaluate    keras-vae-evaluate ...
    keras-vae visualize ...    python -m keras_vae.visualize   keras-vae-visualize ...
    keras-vae generate ...     python -m keras_vae.generate    keras-vae-generate ...
    keras-vae export ...       python -m export                keras-vae-export ...
    keras-vae serve ...        python serve_signature.py       keras-vae-serve ...
    keras-vae presets ...

Each command is one module here with `HELP`, `build_parser` and `main`. It
parses its flags (and answers `--help`) with nothing heavier than argparse
loaded, then imports the library module that does the work: this package
imports the library, and the library never imports it. The error boundary
is `common.run`: a `UsageError` or an `OSError` ends the command with exit
code 2 and one line on stderr, Ctrl-C with 130; any other exception keeps
its traceback, because it is a bug.
"""

from __future__ import annotations

import argparse
import sys

from keras_vae import __version__
from keras_vae.cli import evaluate, export, generate, prepare, presets, serve, train, visualize

COMMANDS = {
    "prepare": prepare,
    "train": train,
    "evaluate": evaluate,
    "visualize": visualize,
    "generate": generate,
    "export": export,
    "serve": serve,
    "presets": presets,
}


def top_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {module.HELP}" for name, module in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="keras-vae",
        usage="keras-vae [-h] [--version] COMMAND ...",
        description="Variational autoencoders in Keras 3 with TensorFlow Probability: "
        "train, evaluate, draw, generate, export and serve.\n\ncommands:\n" + commands,
        epilog="Run `keras-vae COMMAND --help` for a command's flags and examples.\n\n"
        "examples:\n"
        "  keras-vae train --dataset fashion_mnist\n"
        "  keras-vae prepare ~/photos --image-size 64\n"
        "  keras-vae generate --model fashion_mnist_conv --grid new_clothes.png\n"
        "  keras-vae presets list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"keras-vae {__version__}")
    parser.add_argument(
        "command", metavar="COMMAND", choices=list(COMMANDS), help=argparse.SUPPRESS
    )
    return parser


def main(argv=None) -> int:
    """`keras-vae COMMAND ...`: hands the rest of the line to the command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        top_parser().parse_args(argv[:1])  # --help, --version, or an error naming the commands
        return 2
    name, rest = argv[0], argv[1:]
    return COMMANDS[name].main(rest, prog=f"keras-vae {name}")
