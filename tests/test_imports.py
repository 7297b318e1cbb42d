"""`import hm_hf` is cheap, and hm_hf is still registered with transformers and peft whenever they need it.

Each check runs in a fresh interpreter (this one has imported everything already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "transformers.modeling_utils", "datasets", "peft", "accelerate")


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "could not register" not in result.stderr, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_import_hm_hf_imports_no_heavy_library():
    loaded = json.loads(run_python(
        "import sys, json, hm_hf, hm_hf.cli, hm_hf.models.visual_bert\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    ))
    assert loaded == []


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny VisualBERT and bottleneck adapters on it, saved as hm_hf saves them."""
    from peft import get_peft_model

    from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes
    from hm_hf.peft import build_peft_config

    folder = tmp_path_factory.mktemp("registration")
    torch.manual_seed(0)
    model = HmVisualBertForHatefulMemes(HmVisualBertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, visual_embedding_dim=8))
    model.save_pretrained(folder / "model")
    get_peft_model(model, build_peft_config(model, "bottleneck")).save_pretrained(folder / "adapter")
    return folder


LOAD = """
cfg = AutoConfig.for_model("hm_uniter", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37, img_dim=8)
assert type(AutoModelForSequenceClassification.from_config(cfg)).__name__ == "HmUniterForHatefulMemes"
model = AutoModelForSequenceClassification.from_pretrained({model!r})
adapted = PeftModel.from_pretrained(model, {adapter!r})
print(type(model).__name__, adapted.peft_config["default"].peft_type.value)
"""


def test_registered_before_transformers_or_peft_need_it(saved):
    """hm_hf first, then transformers and peft: AutoConfig.for_model, Auto from_pretrained, PeftModel work."""
    code = ("import hm_hf\nfrom transformers import AutoConfig, AutoModelForSequenceClassification\n"
            "from peft import PeftModel\n" + LOAD.format(model=str(saved / "model"), adapter=str(saved / "adapter")))
    assert run_python(code) == "HmVisualBertForHatefulMemes BOTTLENECK"


def test_registered_when_transformers_and_peft_came_first(saved):
    code = ("from transformers import AutoConfig, AutoModelForSequenceClassification\nfrom peft import PeftModel\n"
            "import hm_hf\n" + LOAD.format(model=str(saved / "model"), adapter=str(saved / "adapter")))
    assert run_python(code) == "HmVisualBertForHatefulMemes BOTTLENECK"
