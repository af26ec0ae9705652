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
