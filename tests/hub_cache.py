"""A Hub repo as huggingface_hub's offline cache holds it, so that loading by repo id is tested with no network."""

import shutil
from pathlib import Path

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


def offline_hub_repo(tmp_path: Path, monkeypatch, folder: Path, repo_id: str, absent=(), ignore=()) -> Path:
    """`folder` (less the `ignore` patterns) as the cached snapshot of Hub model repo `repo_id`, offline mode on;
    `absent`: files the cache records as missing from the repo. Returns the snapshot folder."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(folder, snapshot, ignore=shutil.ignore_patterns(*ignore))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    (repo / ".no_exist" / REVISION).mkdir(parents=True)  # what the cache records for files a repo lacks
    for name in absent:
        (repo / ".no_exist" / REVISION / name).touch()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot
