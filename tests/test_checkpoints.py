import json
from pathlib import Path

from hm_hf.training.checkpoints import last_complete_checkpoint


def _checkpoint(root, step, complete=True, state_text=None, truncate=None):
    import torch
    from safetensors.torch import save_file

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64, 64)}}}, path / "optimizer.pt")
    if truncate:  # a file cut short (a full disk, a copy interrupted) in a checkpoint that looks complete
        (path / truncate).write_bytes((path / truncate).read_bytes()[:100])
    if complete:
        (path / "trainer_state.json").write_text(state_text or json.dumps({"global_step": step}))
    return path


def test_half_written_checkpoints_are_skipped(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    assert last_complete_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 4)
    good = _checkpoint(tmp_path, 8)
    _checkpoint(tmp_path, 12, complete=False)  # killed before trainer_state.json
    _checkpoint(tmp_path, 16, state_text='{"global_st')  # killed while writing it
    (tmp_path / "checkpoint-20").mkdir()  # killed right after mkdir
    _checkpoint(tmp_path, 24, truncate="model.safetensors")
    _checkpoint(tmp_path, 28, truncate="optimizer.pt")
    assert last_complete_checkpoint(tmp_path) == str(good)


def test_a_reused_output_dir_of_another_run_is_refused(tmp_path, caplog):
    """Resuming the checkpoints of another run (a reused output_dir: other seed, learning rate or model) once
    trained 0 steps and saved the old model as the new one; a location that moved is not a change."""
    import pytest

    from hm_hf.training.arguments import RecipeError, parse_recipe
    from hm_hf.training.checkpoints import check_same_run, run_settings, write_run_record

    def settings(*overrides):
        recipe = Path(__file__).resolve().parents[1] / "recipes/synthetic/config_tiny.yaml"
        model, data, peft, _, training = parse_recipe([str(recipe), "--output_dir", str(tmp_path / "out"), *overrides])
        return run_settings(model, data, peft, training)

    first = settings()
    assert json.loads(json.dumps(first)) == first and "training.lr_scheduler_type" in first
    check_same_run(tmp_path, first)  # no record yet (a folder from before records): resumed, with a warning
    assert "no hm_hf_run.json" in caplog.text
    write_run_record(tmp_path, first)
    check_same_run(tmp_path, settings("--data_dir", str(tmp_path / "moved"), "--logging_steps", "3"))
    with pytest.raises(RecipeError, match=r"holds the checkpoints of another run \(training.seed: 12345 then, 7 now; "
                                          r"training.learning_rate: 0.0005 then, 0.01 now\): choose another "
                                          r"output_dir, or pass --resume false"):
        check_same_run(tmp_path, settings("--seed", "7", "--learning_rate", "0.01"))
    with pytest.raises(RecipeError, match="model.model_type: 'concat' then, 'visual_bert' now") as refused:
        check_same_run(tmp_path, settings("--model_type", "visual_bert"))
    assert "only moved" not in str(refused.value)
    # A local model folder that moved: refused (a model is named by where it is), saying how to resume.
    write_run_record(tmp_path, settings("--vision_model_name_or_path", str(tmp_path / "clip")))
    moved = settings("--vision_model_name_or_path", str(tmp_path / "elsewhere" / "clip"))
    with pytest.raises(RecipeError, match=r"If the same model files only moved, write the new location for "
                                          rf"model.vision_model_name_or_path into {tmp_path / 'hm_hf_run.json'}"):
        check_same_run(tmp_path, moved)
    record = json.loads((tmp_path / "hm_hf_run.json").read_text())
    record["model.vision_model_name_or_path"] = str(tmp_path / "elsewhere" / "clip")
    (tmp_path / "hm_hf_run.json").write_text(json.dumps(record))
    check_same_run(tmp_path, moved)  # as it says


def test_starting_over_removes_the_old_checkpoints(tmp_path):
    """resume: false in a folder of checkpoints once left them: a later resume took the old run's newest, and
    Trainer's rotation by step number could delete the new run's own instead."""
    from hm_hf.training.checkpoints import remove_checkpoints

    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 8, complete=False)
    (tmp_path / "model.safetensors").write_bytes(b"x")  # the finished model and other files stay
    (tmp_path / "checkpoint-notes.txt").write_text("not a checkpoint folder")
    assert remove_checkpoints(tmp_path) == ["checkpoint-4", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-notes.txt", "model.safetensors"]
    assert last_complete_checkpoint(tmp_path) is None and remove_checkpoints(tmp_path / "missing") == []
