"""keras_vae/config.py and keras_vae/choices.py: flags, protocols, ranges."""

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import REPO

from keras_vae import choices, config, networks
from keras_vae.errors import UsageError


def test_literature_protocol_sets_its_flags():
    c = config.TrainConfig.from_flags(protocol="literature")
    assert (c.binarize, c.train_split, c.validation_split) == (
        "dynamic",
        "train[:50000]",
        "train[50000:]",
    )
    assert (c.iw_samples, c.iw_images, c.early_stopping) == (5000, 0, 20)
    v = config.TrainConfig.from_flags(protocol="vampprior")
    assert (v.architecture, v.latent_dim, v.batch_size, v.learning_rate) == (
        "gated_mlp",
        40,
        100,
        5e-4,
    )
    assert v.normalize_gradients and v.kl_warmup_epochs == 100 and v.early_stopping == 50


# One explicit value per flag a protocol sets, different from the protocol's.
_EXPLICIT = {
    "binarize": "static",
    "train_split": "train[:1000]",
    "validation_split": "train[1000:2000]",
    "early_stopping": 0,
    "iw_samples": 100,
    "iw_images": 500,
    "architecture": "conv",
    "latent_dim": 8,
    "hidden_units": 64,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "normalize_gradients": False,
    "kl_warmup_epochs": 2.0,
    "epochs": 3,
}


@pytest.mark.parametrize(
    "protocol, flag",
    [(p, f) for p in ("literature", "vampprior") for f in sorted(config.PROTOCOLS[p])],
)
def test_an_explicit_flag_wins_over_the_protocol(protocol, flag):
    assert config.PROTOCOLS[protocol][flag] != _EXPLICIT[flag]
    argv = ["--protocol", protocol, f"--{flag.replace('_', '-')}"]
    if isinstance(_EXPLICIT[flag], bool):
        argv[-1] = f"--{'' if _EXPLICIT[flag] else 'no-'}{flag.replace('_', '-')}"
    else:
        argv.append(str(_EXPLICIT[flag]))
    parsed = config.parse_config(argv)
    assert getattr(parsed, flag) == _EXPLICIT[flag]


def test_every_protocol_names_real_flags_with_valid_values():
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    for name, defaults in config.PROTOCOLS.items():
        assert set(defaults) <= fields, name
        config.TrainConfig.from_flags(protocol=name)  # checks every value


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning-rate", "nan"], "`--learning-rate`. Expected a finite number"),
        (["--beta", "nan"], "`--beta`. Expected a finite number"),
        (["--beta", "inf"], "`--beta`. Expected a finite number"),
        (["--kl-warmup-epochs", "-1"], "`--kl-warmup-epochs`. Expected a value >= 0"),
        (["--learning-rate", "0"], "`--learning-rate`. Expected a value > 0"),
        (["--clipnorm", "0"], "`--clipnorm`. Expected a value > 0"),
        (["--iw-k", "0"], "`--iw-k`. Expected a value >= 1"),
        (["--batch-size", "0"], "`--batch-size`. Expected a value >= 1"),
        (["--iw-images", "-5"], "`--iw-images`. Expected a value >= 0"),
        (["--early-stopping", "3"], "`--early-stopping` needs `--validation-split`"),
        (["--pseudo-inputs", "hardtanh"], "`--pseudo-inputs hardtanh` is the vamp prior's"),
    ],
)
def test_bad_values_are_refused_with_the_flag_and_the_range(argv, message):
    with pytest.raises(UsageError, match=message):
        config.parse_config(argv)


def test_a_saved_config_with_unknown_keys_or_bad_json_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"latent_dim": 4, "colour": "red"}))
    with pytest.raises(UsageError, match=r"unknown keys \['colour'\]"):
        config.TrainConfig.from_json_file(str(path))
    path.write_text('{"latent_dim": ')
    with pytest.raises(UsageError, match="config.json is not valid JSON"):
        config.TrainConfig.from_json_file(str(path))
    # A run saved before a flag existed reads back with that flag's default.
    path.write_text(json.dumps({"latent_dim": 4, "prior": "vamp"}))
    assert config.TrainConfig.from_json_file(str(path)).pseudo_inputs == "sigmoid"
    path.write_text(json.dumps({"latent_dim": "four"}))
    with pytest.raises(UsageError, match="config.json: .*`--latent-dim`. Expected .* type int"):
        config.TrainConfig.from_json_file(str(path))


def test_the_cli_choices_are_the_registries():
    from keras_vae import likelihoods, pictures, priors

    assert choices.LIKELIHOODS == tuple(likelihoods.available_likelihoods())
    assert choices.PRIORS == tuple(priors.available_priors())
    assert choices.ARCHITECTURES == tuple(networks.ARCHITECTURES)
    two_level = tuple(name for name, a in networks.ARCHITECTURES.items() if a.levels == 2)
    assert choices.TWO_LEVEL_ARCHITECTURES == two_level
    assert choices.PICTURES == tuple(pictures.PICTURES)
    assert choices.PSEUDO_INPUTS == tuple(priors.VampPrior.forms)


# Every way in: the one command and its subcommands, and the older aliases.
HELP_COMMANDS = [
    ["-m", "keras_vae"],
    *(["-m", "keras_vae", name] for name in ("train", "evaluate", "visualize", "generate")),
    *(["-m", "keras_vae", name] for name in ("export", "serve", "presets")),
    ["-m", "keras_vae", "serve", "run"],
    ["train.py"],
    ["-m", "keras_vae.evaluate"],
    ["-m", "keras_vae.visualize"],
    ["-m", "keras_vae.generate"],
    ["-m", "keras_vae.export"],
    ["-m", "export"],
    ["serve_signature.py"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_help_loads_no_tensorflow(command):
    # `-X importtime` lists every module the process imported.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert imported  # importtime wrote its table
    for heavy in ("tensorflow", "tensorflow_probability", "tensorflow_datasets", "keras"):
        assert heavy not in imported, f"{' '.join(command)} --help imported {heavy}"


def test_the_top_level_help_lists_every_command_with_one_line():
    from keras_vae import cli

    text = cli.top_parser().format_help()
    lines = text.splitlines()
    for name, module in cli.COMMANDS.items():  # one line each: the name, then its help
        assert any(
            line.split() and line.split()[0] == name and line.endswith(module.HELP)
            for line in lines
        ), (name, text)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["no-such-command"])
    assert stopped.value.code == 2


def test_every_subcommand_groups_its_flags_and_ends_with_examples():
    from keras_vae import cli

    for name, module in cli.COMMANDS.items():
        if name in ("serve", "presets"):
            continue  # their flags belong to their own subcommands
        parser = module.build_parser()
        titles = [g.title for g in parser._action_groups]
        own = [
            g for g in parser._action_groups if g.title not in ("options", "positional arguments")
        ]
        assert own, f"{name}: no argument groups"
        assert sum(len(g._group_actions) for g in own) >= 1, titles
        assert parser.epilog.startswith("examples:") and len(parser.epilog.splitlines()) >= 3
    train_groups = [g.title for g in cli.train.build_parser()._action_groups]
    for title in config.FLAG_GROUPS:
        assert title in train_groups


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "keras_vae", "evaluate"],
        ["-m", "keras_vae.evaluate"],
        ["-m", "keras_vae", "visualize"],
        ["-m", "keras_vae.visualize"],
        ["-m", "keras_vae", "generate"],
        ["-m", "keras_vae.generate"],
        ["-m", "keras_vae", "export"],
        ["-m", "keras_vae.export"],
        ["-m", "export"],
    ],
    ids=" ".join,
)
def test_each_old_entry_point_runs_its_command(command, tmp_path):
    """Each way in reaches its command's work: the missing run is refused by it."""
    missing = str(tmp_path / "no-such-run")
    extra = ["--grid", str(tmp_path / "g.png")] if "generate" in command[-1] else []
    result = subprocess.run(
        [sys.executable, *command, "--model", missing, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no-such-run" in last, result.stderr[-2000:]


def test_importing_the_package_loads_no_tensorflow_and_still_registers_the_model():
    """`import keras_vae` alone loads no TensorFlow; with Keras imported before or
    after it, `load_model` finds the VAE."""
    for code, expected in (
        (
            "import sys, keras_vae; print('tensorflow' in sys.modules, 'keras' in sys.modules)",
            ["False", "False"],
        ),
        (
            "import sys, keras_vae, keras; print('tensorflow_datasets' in sys.modules, "
            "keras.saving.get_registered_object('keras_vae>VAE') is keras_vae.VAE)",
            ["False", "True"],
        ),
        (
            "import sys, keras, keras_vae; print('tensorflow_datasets' in sys.modules, "
            "keras.saving.get_registered_object('keras_vae>HVAE') is keras_vae.HVAE)",
            ["False", "True"],
        ),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
        )
        assert out.stdout.split() == expected, (code, out.stderr[-2000:])
