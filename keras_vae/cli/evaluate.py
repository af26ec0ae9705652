"""`keras-vae evaluate`: the IW bound, sample quality, or a preset of a finished run."""

from __future__ import annotations

import argparse

from keras_vae import choices
from keras_vae.cli import common
from keras_vae.config import MAX_IW_SAMPLES, too_many_iw_samples

HELP = "The IW bound or FID of a run, or the run as a preset."
EXAMPLES = [
    "keras-vae evaluate --model runs/RUN --iw-samples 5000",
    "keras-vae evaluate --model runs/RUN --fid",
    "keras-vae evaluate --model runs/RUN --save-preset my_preset --preset-weights float16",
]


def _iw_samples(text: str) -> int:
    value = common.bounded_int(1)(text)
    if value > MAX_IW_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"expected K <= {MAX_IW_SAMPLES:,}, got {value:,}: {too_many_iw_samples(value)}"
        )
    return value


def build_parser(prog: str = "keras-vae evaluate") -> argparse.ArgumentParser:
    parser = common.parser(
        common.prog_name(prog),
        "Importance-weighted evaluation of a finished run; results are printed and "
        "merged into its metrics.json under `evaluation` (the whole test split) or "
        "`evaluation_first_N` (the first N images).",
        EXAMPLES,
    )
    model = parser.add_argument_group("Model")
    model.add_argument("--model", required=True, help="A run directory written by train.")
    bound = parser.add_argument_group("Evaluation")
    bound.add_argument(
        "--iw-samples",
        type=_iw_samples,
        default=1000,
        help="K of the IW bound: K decoder passes per image (default 1000; papers use "
        f"5000; at most {MAX_IW_SAMPLES:,}). The estimated time is printed before it starts.",
    )
    bound.add_argument(
        "--max-images",
        type=common.bounded_int(1),
        help="Evaluate only the first N test images (default: all).",
    )
    bound.add_argument(
        "--fid",
        action="store_true",
        help="Instead of the IW bound: sample quality. FID, precision and recall of "
        "--max-images (default 10,000) images from each sampler (prior, gmm) against "
        "as many test images, in the features of a small classifier trained once on the "
        "run's training split (cached in the run directory). Merged into metrics.json "
        "under `sample_quality`.",
    )
    devices = parser.add_argument_group("Devices")
    devices.add_argument(
        "--batch-size",
        type=common.bounded_int(1, common.MAX_BATCH_SIZE),
        default=100,
        help="Images per batch (default 100).",
    )
    devices.add_argument(
        "--precision",
        choices=choices.PRECISIONS,
        default="auto",
        help="Dtype policy of the networks; `auto` is train's choice for this machine "
        "(mixed_bfloat16 on CPUs with native bfloat16). The distributions and the "
        "log-sum-exp are float32 either way.",
    )
    output = parser.add_argument_group("Output")
    output.add_argument(
        "--save-preset",
        metavar="DIR",
        help="Instead of the IW bound: write the run as a pretrained preset folder "
        "(config, weights, its GMM sampler if fitted, and metadata with the run's command, "
        "data and test figures, plus the IW bound with K=100 on the first 500 test images, "
        "float32) that keras_vae.VAE.from_preset(DIR) and --model DIR read.",
    )
    output.add_argument(
        "--preset-weights",
        choices=choices.PRESET_WEIGHTS,
        default="float32",
        help="With --save-preset: how the weights file stores the weights (default "
        "float32). float16 halves the file; the model still computes in float32, and the "
        "recorded check figure is measured with the rounded weights.",
    )
    common.add_verbose(output)
    return parser


def main(argv=None, prog: str = "keras-vae evaluate") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.preset_weights != "float32" and not args.save_preset:
        parser.error("--preset-weights applies only with --save-preset DIR; add it or drop it.")

    def work():
        common.check_model(args.model)
        import json

        from keras_vae import evaluation  # TensorFlow loads here

        if args.save_preset:
            metadata = evaluation.save_run_preset(args.model, args.save_preset, args.preset_weights)
            print(f"Preset written to {args.save_preset}: {json.dumps(metadata['check'])}")
            return
        if args.fid:
            from keras_vae import quality

            result = quality.sample_quality(args.model, args.max_images or quality.DEFAULT_COUNT)
            print(json.dumps(result, indent=2))
            return
        result = evaluation.evaluate_run(
            args.model, args.iw_samples, args.batch_size, args.max_images, args.precision
        )
        print(
            json.dumps(
                {k: v for k, v in result.items() if not k.startswith("kl_per_dim")}, indent=2
            )
        )

    return common.run(work, verbose=args.verbose)
