"""`keras-vae presets`: the pretrained presets shipped with the package."""

from __future__ import annotations

import json

from keras_vae import presets
from keras_vae.cli import common

HELP = "List the shipped pretrained presets, or show one."
EXAMPLES = [
    "keras-vae presets list",
    "keras-vae presets show fashion_mnist_vampprior",
    "keras-vae generate --model fashion_mnist_conv --grid new_clothes.png",
]


def build_parser(prog: str = "keras-vae presets"):
    parser = common.parser(
        common.prog_name(prog),
        "The pretrained presets shipped with the package. Any command's --model takes "
        "a preset's bare name; a path (with a /) is always a folder.",
        EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="One line per shipped preset: its model and test figure.")
    show = sub.add_parser("show", help="A preset's model config, data and figures, as JSON.")
    show.add_argument("name", help="A shipped preset's name or a preset folder.")
    return parser


def describe(name: str) -> str:
    """One line: name, architecture and prior, data, and the test figure."""
    config, _, metadata = presets.read(name)
    train = metadata.get("train_config") or {}
    evaluations = metadata.get("evaluation") or {}
    figure = ""
    for key, ev in sorted(evaluations.items()):
        figure = (
            f"IW bound {ev['iw_nll_nats']:.2f} nats "
            f"(K={ev['iw_samples']}, {ev['num_images']} images)"
        )
        if key == "evaluation":
            break
    architecture = config.get("architecture", train.get("architecture", "?"))
    model = f"{architecture}, prior {config.get('prior', '?')}"
    return f"{name:30s} {model:32s} {metadata.get('dataset', '?'):14s} {figure}"


def main(argv=None, prog: str = "keras-vae presets") -> int:
    args = build_parser(prog).parse_args(argv)

    def work():
        if args.command == "list":
            for name in presets.available():
                print(describe(name))
            return
        config, weights, metadata = presets.read(args.name)
        shown = {k: v for k, v in metadata.items() if k != "versions"}
        print(json.dumps({"model_config": config, "weights": weights, **shown}, indent=2))

    return common.run(work)
