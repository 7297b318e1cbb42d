"""A Hub repo as huggingface_hub's offline cache holds it, so that loading by repo id is tested with no network."""

import shutil
from pathlib import Path

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


def offline_hub_repo(tmp_path: Path, monkeypatch, folder: Path, repo_id: str, absent=(), ignore=(), ref: str = "main",
                     commit: str = REVISION, cache: Path | None = None) -> Path:
    """`folder` (less the `ignore` patterns) as the cached snapshot of Hub model repo `repo_id` at `commit`, which
    branch or tag `ref` names; `absent`: files the cache records as missing from that commit. Offline mode goes
    on, and the cache is huggingface_hub's default unless `cache` names one (a ``cache_dir``: the default is left
    alone). Call again with another `ref` and `commit` for a second revision. Returns the snapshot folder."""
    import huggingface_hub.constants

    repo = (cache or tmp_path / "hub") / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot, ignore=shutil.ignore_patterns(*ignore))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    (repo / ".no_exist" / commit).mkdir(parents=True)  # what the cache records for files a repo lacks
    for name in absent:
        (repo / ".no_exist" / commit / name).touch()
    if cache is None:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot
