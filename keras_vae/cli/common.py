"""What every command shares: flag types, the quiet console and the error boundary.

Nothing here imports TensorFlow: a command parses its flags, and answers
`--help`, before its work imports the library that loads TensorFlow.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import sys
import textwrap
import threading

from keras_vae import presets
from keras_vae.errors import Interrupted, UsageError

# Bounds of the evaluation flags (checked before any work).
MAX_BATCH_SIZE = 100_000
MAX_GENERATE = 100_000

PRESET_HELP = (
    f"a pretrained preset: a shipped name ({', '.join(presets.available()) or 'none installed'}) "
    "or a folder written by VAE.save_to_preset."
)


def bounded_int(low: int, high: int | None = None):
    """An argparse `type`: an int in [low, high], with a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            upper = f" and <= {high:,}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}{upper}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse `type`: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def prog_name(default: str) -> str:
    """The name `--help` shows: the console script's (`keras-vae-*`) when it
    started the process, else the given form, e.g. `keras-vae train`."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith("keras-vae-") else default


def parser(
    prog: str, description: str, examples: list[str], usage: str | None = None
) -> argparse.ArgumentParser:
    """A command's parser: its description, and examples after the flags."""
    epilog = "examples:\n" + "\n".join(textwrap.indent(e, "  ") for e in examples)
    return argparse.ArgumentParser(
        prog=prog,
        usage=usage,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_verbose(group) -> None:
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False,
        help="Show TensorFlow's, absl's and the TFLite converter's own logs (hidden by default).",
    )


# A line of TensorFlow's C++ log (absl's form, and the older glog form), or
# absl's notice that logging is not initialised yet.
NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ :]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    # The TFLite converter's quantizer prints its settings.
    rb"|fully_quantize: \d+, inference_type: )"
)


def quiet_console(verbose: bool) -> None:
    """Hides the libraries' own logs; called before TensorFlow is imported.

    TensorFlow's C++ log (`I0000`/`W0000`/`E0000` lines, the oneDNN notice,
    `failed call to cuInit` on a machine without a GPU; the TFLite converter
    logs through it too) mostly obeys `TF_CPP_MIN_LOG_LEVEL`, but the lines
    written before absl's logging is initialised ignore it (abseil-cpp#1718).
    So the process's native stderr goes through a filter that drops those
    lines and passes everything else, every traceback included, unchanged.
    A `TF_CPP_MIN_LOG_LEVEL` the user set is theirs: then nothing is
    filtered. Python's `tensorflow` and `absl` loggers (TFDS warns through
    absl) keep their errors; Python warnings, Keras's among them, stay.
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        # absl's own verbosity: its handler would otherwise print WARNING:absl lines.
        from absl import logging as absl_logging  # a small pure-Python module

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    _filter_native_stderr()


def _filter_native_stderr() -> None:
    """Points file descriptor 2 at a pipe whose reader drops `NATIVE_LOG_LINE`s.

    At exit the real stderr comes back and the reader drains what is left.
    """
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable stderr: nothing to quieten
        return

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not NATIVE_LOG_LINE.match(line):
                        os.write(real, line + b"\n")
            if pending and not NATIVE_LOG_LINE.match(pending):
                os.write(real, pending)

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes the pipe's last write end: the reader sees its end
        reader.join(timeout=10)

    atexit.register(restore)


def check_model(spec: str, flag: str = "--model") -> None:
    """A `--model` that names nothing fails at once, before TensorFlow loads.

    What it names (a run, a .keras file, a preset) is checked when it is read.
    """
    if not (os.path.exists(spec) or presets.is_shipped_name(spec)):
        raise UsageError(
            f"{flag} {spec}: no such run directory, .keras file or preset. {presets.naming_rule()}"
        )


def run(work, *args, verbose: bool = False) -> int:
    """Calls `work(*args)`; a user's mistake becomes exit 2 and one line.

    Ctrl-C becomes exit 130 and one line; `work` may raise `Interrupted`
    with a line of its own (for example the command that resumes a run).
    """
    quiet_console(verbose)
    try:
        work(*args)
    except (UsageError, OSError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        message = str(e) if isinstance(e, Interrupted) else ""
        print(f"Stopped (Ctrl-C). {message}".rstrip(), file=sys.stderr)
        # An interrupted TensorFlow leaves objects whose finalizers complain at
        # exit ("Exception ignored in ..."): after Ctrl-C the one line is all.
        sys.unraisablehook = lambda unraisable: None
        return 130
    return 0
