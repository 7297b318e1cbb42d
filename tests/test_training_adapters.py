"""Adapters on a local base model (`model_name_or_path: data/uniter-base-converted`, a relative folder) load from
any working directory: training records the base model's absolute path in adapter_config.json; a relative path
(older runs, hand-edited files) is read from the working directory, else beside the adapters; and when it is
found nowhere, the error names the file and the path and says to pass `base_model=` (`--base-model`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import build_tiny_model, make_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/synthetic/config_tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LoRA on a tiny local Concat model given by a relative path, trained from its parent folder."""
    from hm_hf.training.run import main

    root = tmp_path_factory.mktemp("adapters")
    memes = make_data(root, n_train=16, n_dev=8)
    build_tiny_model(root / "models" / "tiny", [m.text for split in memes.values() for m in split])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main([RECIPE, "--model_name_or_path", "models/tiny", "--config_overrides", "",
                         "--peft_method", "lora", "--data_dir", str(root / "data"),
                         "--feature_cache", str(root / "features"), "--dataset_cache_dir", str(root / "cache"),
                         "--output_dir", str(root / "out"), "--max_steps", "2", "--per_device_train_batch_size", "8",
                         "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]) == 0
        finally:
            torch.set_num_threads(threads)
    return root


def _with_base_path(trained, tmp_path, base: str) -> Path:
    """A copy of the saved adapters whose adapter_config.json names `base`."""
    folder = tmp_path / "adapters"
    shutil.copytree(trained / "out", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return folder


def test_training_records_the_local_base_model_by_its_absolute_path(trained, tmp_path, monkeypatch):
    from peft import PeftModel

    from hm_hf.inference.model_loading import load_trained_model

    config = json.loads((trained / "out" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((trained / "models" / "tiny").resolve())
    assert not (trained / "out" / "base_model").exists()  # the base model is referenced, not copied
    monkeypatch.chdir(tmp_path)  # another working directory than training's
    model = load_trained_model(str(trained / "out"))
    assert isinstance(model, PeftModel) and model.get_base_model().config.num_labels == 2


def test_a_relative_base_model_path_is_read_from_the_working_directory_else_beside_the_adapters(
        trained, tmp_path, monkeypatch):
    from hm_hf.inference.model_loading import load_trained_model

    monkeypatch.chdir(trained)  # "models/tiny" as an older run wrote it, loaded where it was trained: as before
    assert load_trained_model(str(_with_base_path(trained, tmp_path / "a", "models/tiny"))) is not None
    beside = tmp_path / "b"  # "../models/tiny", relative to the adapters' folder, from anywhere
    (beside / "models").mkdir(parents=True)
    shutil.copytree(trained / "models" / "tiny", beside / "models" / "tiny")
    monkeypatch.chdir(ROOT)
    assert load_trained_model(str(_with_base_path(trained, beside, "../models/tiny"))) is not None


def test_a_base_model_found_nowhere_is_a_named_error_and_base_model_gives_it(trained, tmp_path, monkeypatch, capsys):
    from hm_hf.inference.cli import cli
    from hm_hf.inference.model_loading import load_trained_model
    from hm_hf.pipeline import HatefulMemePipeline

    folder = _with_base_path(trained, tmp_path, "models/tiny")  # the relative path older runs wrote
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as err:
        load_trained_model(str(folder))
    message = str(err.value)
    assert str(folder / "adapter_config.json") in message and "'models/tiny'" in message
    assert "base_model=" in message and "--base-model" in message
    base = str(trained / "models" / "tiny")
    assert load_trained_model(str(folder), base_model=base) is not None
    pipe = HatefulMemePipeline.from_pretrained(str(folder), base_model=base, device="cpu")
    image = str(sorted((trained / "data" / "img").iterdir())[0])
    assert 0.0 <= pipe(image, texts="a caption", return_regions=False)["probability"] <= 1.0

    assert cli(["--model", str(folder), "--text", "a caption", "--no-regions", image]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
    assert cli(["--model", str(folder), "--base-model", base, "--text", "a caption", "--no-regions", image]) == 0
    assert json.loads(capsys.readouterr().out)["image"] == image


def test_pushing_adapters_on_a_local_base_model_takes_the_base_along(trained, tmp_path, monkeypatch):
    """Pushed as they are, the adapters would name a folder of the training machine: the push uploads that base
    model too, as base_model/, and the repo then loads by id where the folder does not exist."""
    import huggingface_hub

    from hm_hf.inference.model_loading import load_trained_model, local_base_model_to_push
    from hm_hf.training.run import main
    from hub_cache import offline_hub_repo

    base = (trained / "models" / "tiny").resolve()
    assert local_base_model_to_push(trained / "out") == base
    assert local_base_model_to_push(trained / "models" / "tiny") is None  # not adapters
    uploads = []

    class FakeApi:  # stands in for the Hub: records each upload_folder and the files it would send
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, folder_path, repo_id, path_in_repo=None, delete_patterns=None, **kwargs):
            files = {p.relative_to(folder_path).as_posix(): p.resolve() for p in Path(folder_path).rglob("*")
                     if p.is_file()}
            uploads.append((path_in_repo, files, delete_patterns))
            return f"https://huggingface.co/{repo_id}/commit/{len(uploads)}"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "pushed"
    (out / "base_model").mkdir(parents=True)  # an earlier random-init run's, in the reused output folder
    (out / "base_model" / "config.json").write_text("{}")
    assert main([RECIPE, "--model_name_or_path", str(base), "--config_overrides", "", "--peft_method", "lora",
                 "--data_dir", str(trained / "data"), "--feature_cache", str(trained / "features"),
                 "--dataset_cache_dir", str(trained / "cache"), "--output_dir", str(out), "--max_steps", "1",
                 "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
                 "--load_best_model_at_end", "false", "--push_to_hub", "true", "--hub_model_id", "org/lora"]) == 0
    assert not (out / "base_model").exists()  # the stale base model is gone, not loaded in place of the real one
    (path_in_repo, files, delete), = uploads  # one commit: adapters and base model land together or not at all
    assert path_in_repo is None and delete == ["clip_model/**", "base_model/**"]  # the base replaces an earlier one
    assert {name: files[name] for name in files if name.startswith("base_model/")} == {
        f"base_model/{p.relative_to(base).as_posix()}": p.resolve() for p in base.rglob("*") if p.is_file()}
    assert files["adapter_model.safetensors"] == (out / "adapter_model.safetensors").resolve()
    assert not any(name.startswith("checkpoint-") for name in files)

    # The repo as pushed, on a machine without the base model's folder: it loads by id and scores as locally.
    repo = tmp_path / "repo"
    shutil.copytree(out, repo)
    shutil.copytree(base, repo / "base_model")
    config = json.loads((repo / "adapter_config.json").read_text())
    (repo / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/elsewhere/tiny"}))
    local = load_trained_model(str(out)).eval()
    offline_hub_repo(tmp_path, monkeypatch, repo, "org/lora")
    from_hub = load_trained_model("org/lora").eval()
    local_weights, hub_weights = local.state_dict(), from_hub.state_dict()
    assert local_weights.keys() == hub_weights.keys()
    for name, weights in local_weights.items():
        torch.testing.assert_close(weights, hub_weights[name], msg=name)


def test_push_sends_extra_folders_in_the_same_commit_and_a_failure_says_how_to_finish(tmp_path, monkeypatch):
    import huggingface_hub

    from hm_hf.hub import PushError, push_folder

    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, folder_path, repo_id, path_in_repo=None, delete_patterns=None, **kwargs):
            uploads.append((path_in_repo, delete_patterns))
            if path_in_repo is None:
                raise OSError("connection reset")
            return "https://huggingface.co/org/x/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with pytest.raises(PushError) as err:
        push_folder(tmp_path / "out", "org/x", extra_folders={"base_model": tmp_path / "base"},
                    delete_patterns=["base_model/**"])
    assert uploads == [(None, ["base_model/**"])]
    message = str(err.value)
    assert f"hf upload org/x {tmp_path / 'base'} base_model" in message
    assert f"hf upload org/x {tmp_path / 'out'} --exclude 'checkpoint-*'" in message
    assert "--exclude training_args.bin" in message and "--exclude '*.bin'" in message  # as this push leaves out

    class NoNetworkApi(FakeApi):  # huggingface_hub's HTTP client raises transport errors that are not OSErrors
        def create_repo(self, repo_id, **kwargs):
            from huggingface_hub.errors import HTTPError

            raise type("ConnectError", (HTTPError,), {})("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "HfApi", NoNetworkApi)
    with pytest.raises(PushError, match=r"cannot push to org/x: ConnectError \(no network\?\); the files are saved"):
        push_folder(tmp_path / "out", "org/x")


def test_adapters_at_a_hub_revision_come_with_that_revision_s_base_model(trained, tmp_path, monkeypatch):
    """load_trained_model(repo, revision=...) reads adapter_config.json, the adapters and the travelled base_model/
    of that revision, not main's."""
    from safetensors.torch import load_file, save_file

    from hm_hf.inference.model_loading import load_trained_model
    from hub_cache import offline_hub_repo

    versions = {}
    for ref, commit, change in (("main", "1" * 40, 0.0), ("v2", "2" * 40, 0.5)):
        folder = tmp_path / ref
        shutil.copytree(trained / "out", folder, ignore=shutil.ignore_patterns("checkpoint-*"))
        shutil.copytree(trained / "models" / "tiny", folder / "base_model")
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/elsewhere/x"}))
        for weights in (folder / "adapter_model.safetensors", folder / "base_model" / "model.safetensors"):
            save_file({name: tensor + change for name, tensor in load_file(weights).items()}, weights)
        offline_hub_repo(tmp_path, monkeypatch, folder, "org/lora-versions", ref=ref, commit=commit)
        versions[ref] = load_trained_model(str(folder)).eval().state_dict()
    import huggingface_hub.constants

    for ref, offline in (("main", True), ("v2", True), ("v2", False)):
        # offline False: local_files_only alone keeps every part (peft's adapters too) off the network
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        from_hub = load_trained_model("org/lora-versions", revision=ref, local_files_only=True).eval().state_dict()
        assert from_hub.keys() == versions[ref].keys()
        for name, weights in versions[ref].items():
            torch.testing.assert_close(from_hub[name], weights, msg=f"{ref}: {name}")


def test_a_base_model_in_a_repo_of_its_own_is_read_at_its_own_revision(trained, tmp_path, monkeypatch):
    """The adapters' revision is theirs: a base model named by Hub id is read at the revision adapter_config.json
    records for it (here the base repo has only that one, so the adapters' revision or main would fail)."""
    from hm_hf.inference.model_loading import load_trained_model
    from hub_cache import offline_hub_repo

    offline_hub_repo(tmp_path, monkeypatch, trained / "models" / "tiny", "org/tiny-base", ref="b1", commit="4" * 40)
    adapters = tmp_path / "adapters"
    shutil.copytree(trained / "out", adapters, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((adapters / "adapter_config.json").read_text())
    (adapters / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "org/tiny-base", "revision": "b1"}))
    offline_hub_repo(tmp_path, monkeypatch, adapters, "org/lora-own-base", ref="v3", commit="5" * 40)
    expected = load_trained_model(str(trained / "out")).eval().state_dict()
    from_hub = load_trained_model("org/lora-own-base", revision="v3").eval().state_dict()
    assert from_hub.keys() == expected.keys()
    for name, weights in expected.items():
        torch.testing.assert_close(from_hub[name], weights, msg=name)


def test_a_hub_repo_with_pickled_adapter_weights_is_refused_by_name(trained, tmp_path, monkeypatch):
    """Adapters from a Hub repo are read as safetensors only: a repo holding adapter_model.bin gets an error naming
    the repo and what to do, before anything reads the pickle (which is not one: reading it would fail otherwise)."""
    from hm_hf.inference.model_loading import load_trained_model
    from hub_cache import offline_hub_repo

    repo = shutil.copytree(trained / "out", tmp_path / "pickled", ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(trained / "models" / "tiny", repo / "base_model")
    (repo / "adapter_model.safetensors").unlink()
    (repo / "adapter_model.bin").write_bytes(b"not to be unpickled")
    offline_hub_repo(tmp_path, monkeypatch, repo, "org/pickled")
    with pytest.raises(OSError, match=r"org/pickled: no adapter_model.safetensors .* safetensors only"):
        load_trained_model("org/pickled")
