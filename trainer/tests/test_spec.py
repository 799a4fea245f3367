"""The trainer accepts exactly what the API accepts: both check hyperparameters.json (the Nebius
SupervisedHParameters' types, ranges and defaults; test/fine-tuning/hyperparameters.test.ts keeps it
equal to the spec), so these edges are the API's too (test/contract/jobs.test.ts)."""

import pytest

from opentune_trainer.protocol import JobError
from opentune_trainer.spec import RULES, parse_hparams


def test_api_edge_values_are_accepted():
    hp = parse_hparams(
        {
            "lora": True,
            "lora_dropout": 1.0,
            "warmup_ratio": 1.0,
            "batch_size": 64,
            "n_epochs": 20,
            "lora_r": 128,
            "learning_rate": 0.0,
            "lora_alpha": 8,
            "context_length": 131072,
        }
    )
    assert hp.lora_dropout == 1.0 and hp.batch_size == 64 and hp.lora_r == 128 and hp.n_epochs == 20
    low = parse_hparams(
        {
            "batch_size": 1,
            "n_epochs": 1,
            "lora_r": 8,
            "warmup_ratio": 0,
            "max_grad_norm": 1e-9,
            "context_length": 8192,
            "learning_rate": 1e308,
        }
    )
    assert low.batch_size == 1 and low.max_grad_norm == 1e-9


def test_missing_values_are_the_shared_defaults():
    hp = parse_hparams({})
    assert hp.batch_size == RULES["batch_size"]["default"] == 8
    assert (hp.learning_rate, hp.n_epochs, hp.lora, hp.lora_r, hp.lora_alpha) == (1e-5, 3, False, 8, 8)
    assert parse_hparams({"batch_size": None}).batch_size == 8


@pytest.mark.parametrize(
    "name,value,why",
    [
        ("batch_size", 0, "must be ≥ 1"),
        ("batch_size", 65, "must be ≤ 64"),
        ("batch_size", 2.5, "must be an integer"),
        ("n_epochs", 21, "must be ≤ 20"),
        ("n_epochs", 0, "must be ≥ 1"),
        ("max_grad_norm", 0, "must be > 0"),
        ("lora_r", 7, "must be ≥ 8"),
        ("lora_r", 256, "must be ≤ 128"),
        ("lora_alpha", 4, "must be ≥ 8"),
        ("lora_dropout", 1.5, "must be ≤ 1"),
        ("warmup_ratio", -0.1, "must be ≥ 0"),
        ("learning_rate", -1, "must be ≥ 0"),
        ("weight_decay", -1, "must be ≥ 0"),
        ("context_length", 4096, "must be ≥ 8192"),
        ("learning_rate", float("nan"), "must be a number"),
        ("batch_size", True, "must be an integer"),
        ("lora", "yes", "must be true or false"),
        ("packing", 1, "must be true or false"),
    ],
)
def test_values_outside_the_api_range_are_the_jobs_fault(name, value, why):
    with pytest.raises(JobError) as e:
        parse_hparams({name: value})
    assert (e.value.code, e.value.param, e.value.message) == ("invalid_hyperparameters", name, f"{name} {why}")


def test_an_integral_float_counts_as_an_integer():
    assert parse_hparams({"batch_size": 4.0}).batch_size == 4


def test_unknown_keys_are_ignored():
    assert parse_hparams({"learning_rate_multiplier": "auto"}).batch_size == 8
