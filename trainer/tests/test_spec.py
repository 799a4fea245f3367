"""Hyperparameter checks accept every value the API accepts (SupervisedHParameters' ranges)."""
import pytest

from opentune_trainer.protocol import JobError
from opentune_trainer.spec import parse_hparams


def test_api_edge_values_are_accepted():
    hp = parse_hparams({"lora": True, "lora_dropout": 1.0, "warmup_ratio": 1.0, "batch_size": 64, "n_epochs": 20,
                        "lora_r": 128, "learning_rate": 0.0})
    assert hp.lora_dropout == 1.0 and hp.batch_size == 64


def test_bad_values_are_the_jobs_fault():
    with pytest.raises(JobError) as e:
        parse_hparams({"max_grad_norm": 0})
    assert e.value.code == "invalid_hyperparameters"
