"""The trainer refuses the models supported_models.json leaves out, word for word as the service."""

import json
import os

import pytest

from opentune_trainer.checkpoint import ModelError, read_config
from opentune_trainer.model import ModelConfig
from opentune_trainer.support import unsupported_reason

with open(os.path.join(os.path.dirname(__file__), "model_support_cases.json")) as f:
    CASES = json.load(f)


def config_of(case: dict) -> dict:
    merged = {**CASES["base"], **case["set"]}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_each_config_is_judged_as_the_service_judges_it(case):
    assert unsupported_reason(config_of(case)) == case["reason"]


def test_an_unsupported_folder_is_an_invalid_model_naming_what_is_supported(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump({**CASES["base"], "model_type": "gemma"}, f)
    with pytest.raises(ModelError) as e:
        read_config(str(tmp_path))
    assert 'model_type "gemma" is not supported' in str(e.value)
    assert "supported: model_type llama, mistral, qwen2, qwen3; rope scaling default, linear, llama3" in str(e.value)


def test_model_config_refuses_a_yarn_rope():
    with pytest.raises(ValueError, match='rope scaling "yarn" is not supported'):
        ModelConfig.from_hf({**CASES["base"], "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_a_job_on_a_mixture_of_experts_model_fails_as_invalid_model(tmp_path, splits):
    from helpers import make_spec, run_cli

    model = tmp_path / "mixtral"
    model.mkdir()
    with open(model / "config.json", "w") as f:
        json.dump({**CASES["base"], "model_type": "mixtral", "num_local_experts": 8}, f)
    code, lines, _ = run_cli("train", "--spec", make_spec(str(tmp_path), str(model), *splits))
    assert code == 2
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "invalid_model"
    assert 'model_type "mixtral" is not supported' in lines[-1]["message"]
