"""The run directory: what reading a run that is not finished says."""

import json
import os

import pytest

from keras_vae import runs
from keras_vae.errors import UsageError


@pytest.mark.parametrize("backup", ["backup", os.path.join("backup", "worker-0")])
def test_an_unfinished_run_is_named_with_its_epochs_and_the_resume_command(tmp_path, backup):
    os.makedirs(tmp_path / backup)
    with open(tmp_path / backup / "training_metadata.json", "w") as f:
        json.dump({"epoch": 7, "batch": 0}, f)  # Keras's BackupAndRestore: 7 epochs done
    assert runs.backup_epochs(str(tmp_path)) == 7
    with pytest.raises(UsageError) as error:
        runs.load_run(str(tmp_path))
    message = str(error.value)
    assert "unfinished" in message and "7 epoch(s)" in message
    assert f"python train.py --resume --output-dir {tmp_path}" in message


def test_a_folder_that_is_no_run_says_so(tmp_path):
    assert runs.backup_epochs(str(tmp_path)) is None
    with pytest.raises(UsageError, match="holds no model.keras"):
        runs.load_run(str(tmp_path))


def test_the_same_command_recognises_its_unfinished_run_saved_before_a_new_flag(tmp_path):
    """A run's config.json from before a flag existed still matches the command
    that started it (the flag at its default), and no other command."""
    import dataclasses

    from keras_vae.config import TrainConfig

    config = TrainConfig(latent_dim=4, output_dir=str(tmp_path))
    saved = dataclasses.asdict(config)
    del saved["pseudo_inputs"]  # as written before the flag existed
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    assert runs.is_unfinished_run_of(str(tmp_path), config)
    other = dataclasses.replace(config, latent_dim=5)
    assert not runs.is_unfinished_run_of(str(tmp_path), other)
    (tmp_path / "metrics.json").write_text("{}")  # finished: not to be continued
    assert not runs.is_unfinished_run_of(str(tmp_path), config)
