"""No code path in hm_hf may run code from a file the user did not create.

Fails on `pickle.load(s)`, `torch.load` without `weights_only=True`, `np.load(..., allow_pickle=True)`,
`trust_remote_code=True` and `yaml.load` without a safe loader. The only exception is a call on a line
that carries the marker `# safety-opt-in: <why>`, used where a documented, explicit user flag asks for
it (reading MMF's pickled `_info.npy` files).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["hm_hf", "recipes", "spaces", "dataset_scripts"]
OPT_IN = "# safety-opt-in:"
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader",
                     "_UniqueKeyLoader"}  # hm_hf.training.arguments': a SafeLoader (test_hm_hf_loaders_are_safe)


def _call_name(node: ast.Call) -> str:
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(node: ast.Call, name: str):
    for keyword in node.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """(line, reason) for every unsafe call in `source` not marked as an explicit opt-in."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        short = name.rsplit(".", 1)[-1]
        reason = None
        if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load") or short in ("Unpickler",):
            reason = "unpickles"
        elif name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            reason = "torch.load without weights_only=True"
        elif short == "load" and name.split(".")[0] in ("np", "numpy") and _is_true(_keyword(node, "allow_pickle")):
            reason = "np.load with allow_pickle=True"
        elif _is_true(_keyword(node, "trust_remote_code")):
            reason = "trust_remote_code=True"
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = getattr(loader, "attr", getattr(loader, "id", None))
            if loader_name not in SAFE_YAML_LOADERS:
                reason = "yaml.load without a safe loader"
        if reason and OPT_IN not in lines[node.lineno - 1]:
            found.append((node.lineno, reason))
    return found


def _python_files():
    for folder in SCANNED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_checker_catches_each_pattern():
    bad = """
import pickle, torch, numpy as np, yaml
pickle.load(f)
pickle.loads(b)
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
np.load("x.npy", allow_pickle=True)
AutoModel.from_pretrained("x", trust_remote_code=True)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
"""
    assert [line for line, _ in unsafe_calls(bad)] == [3, 4, 5, 6, 7, 8, 9, 10]
    good = """
torch.load("x.pt", weights_only=True)
np.load("x.npy")
np.load("x.npy", allow_pickle=False)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.safe_load(text)
np.load(path, allow_pickle=True)  # safety-opt-in: --allow-pickle-for-mmf-info
"""
    assert unsafe_calls(good) == []


@pytest.mark.parametrize("path", list(_python_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading(path):
    problems = unsafe_calls(path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(f"line {n}: {why}" for n, why in problems)


def test_hm_hf_loaders_are_safe():
    """The hm_hf loader classes in SAFE_YAML_LOADERS only add checks to PyYAML's safe loader."""
    import yaml

    from hm_hf.training.arguments import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=_UniqueKeyLoader)
