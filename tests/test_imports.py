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


def test_every_lazy_name_resolves():
    import importlib

    for package in ("hm_hf", "hm_hf.synthetic", "hm_hf.processing", "hm_hf.models.clip", "hm_hf.models.concat",
                    "hm_hf.models.uniter", "hm_hf.models.vilbert", "hm_hf.models.visual_bert"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
    import hm_hf

    assert hm_hf.models.visual_bert.HmVisualBertConfig.model_type == "hm_visual_bert"  # subpackages on first use
    with pytest.raises(AttributeError):
        hm_hf.no_such_name


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


# ---------------------------------------------------------------------------------------------- layering

PACKAGE = ROOT / "hm_hf"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (function-level imports too), relative ones resolved."""
    import ast

    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_inference_lives_below_training():
    """Only hm_hf.training imports hm_hf.training: the pipeline, the processor, the models ... never reach up."""
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.startswith("hm_hf.training"))
                 for path in PACKAGE.rglob("*.py") if "training" not in path.relative_to(PACKAGE).parts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_training_does_not_import_the_pipeline_or_the_old_settings_writer():
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path)
                                                      if m.startswith(("hm_hf.pipeline", "hm_hf.processing.legacy")))
                 for path in (PACKAGE / "training").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert "hm_hf.processing.processor.MemeProcessor" in imported_modules(PACKAGE / "training" / "data.py")
