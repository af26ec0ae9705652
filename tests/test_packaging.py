"""The wheel: only `keras_vae` is installed (no generic top-level `export`,
`train` or `serve_signature`), with its presets, under 20 MB, and every
console script points into it."""

import configparser
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_installs_only_keras_vae(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("keras_vae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # The whole package, presets included, stays under 20 MB installed.
    installed = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())
    assert installed < 20_000_000, f"{installed / 1e6:.1f} MB installed"
    top = {name.split("/")[0] for name in names}
    info = next(t for t in top if t.endswith(".dist-info"))
    assert top == {"keras_vae", info}, top
    assert "keras_vae/export/runner.py" in names and "keras_vae/images.py" in names
    assert any(n.startswith("keras_vae/presets/") and n.endswith(".weights.h5") for n in names)
    scripts = configparser.ConfigParser()
    scripts.read_string(zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode())
    targets = dict(scripts["console_scripts"])
    assert {"keras-vae", "keras-vae-train", "keras-vae-export", "keras-vae-serve"} <= set(targets)
    for target in targets.values():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, target
