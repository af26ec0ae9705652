"""Draws the pictures of the docs: each preset's samples, README's new clothes,
and a screenshot of a one-epoch run's report.html in headless Chromium.

    python docs/scripts/make_pictures.py [--skip-report]

Needs the package installed, Debian's dataset-fashion-mnist (for the report's
run) and Debian's chromium. Writes docs/images/*.png; nothing is drawn by hand.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.path.join(REPO, "docs", "images")
# What a user runs, as README.md writes it.
NEW_CLOTHES = ["generate", "--model", "fashion_mnist_conv", "--count", "64", "--seed", "0"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def keras_vae(*args):
    subprocess.run([sys.executable, "-m", "keras_vae", *args], check=True, cwd=REPO)


def preset_samples():
    from keras_vae import presets

    for name in presets.available():
        keras_vae(
            "generate",
            "--model",
            name,
            "--count",
            "64",
            "--seed",
            "0",
            "--grid",
            os.path.join(IMAGES, f"{name}.png"),
        )
    keras_vae(*NEW_CLOTHES, "--grid", os.path.join(IMAGES, "new_clothes.png"))


def report_screenshot():
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Debian's chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        keras_vae(
            "train",
            "--train-split",
            "train[:4096]",
            "--test-split",
            "test[:1000]",
            "--epochs",
            "1",
            "--seed",
            "0",
            "--no-export",
            "--iw-samples",
            "20",
            "--shifted-dataset",
            "mnist",
            "--output-dir",
            run,
        )
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp}/profile",
                f"--screenshot={os.path.join(IMAGES, 'report.png')}",
                "--window-size=1100,1400",
                "file://" + os.path.join(run, "report.html"),
            ],
            check=True,
            capture_output=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    os.makedirs(IMAGES, exist_ok=True)
    preset_samples()
    if not args.skip_report:
        report_screenshot()
    print(f"Pictures in {IMAGES}")


if __name__ == "__main__":
    main()
