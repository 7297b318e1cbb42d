import json

from hm_hf.training.checkpoints import last_complete_checkpoint


def _checkpoint(root, step, complete=True, state_text=None):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    (path / "optimizer.pt").write_bytes(b"x")
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
    assert last_complete_checkpoint(tmp_path) == str(good)
