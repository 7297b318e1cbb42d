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


class FakeHubRepo:
    """One Hub repo's files as `HfApi.upload_folder` leaves them: `ignore_patterns` filter the local files,
    `delete_patterns` (relative to `path_in_repo`) remove remote ones the upload does not bring. Monkeypatch
    ``huggingface_hub.HfApi`` with `api` to push into it, then `write` it out to load it from the cache."""

    def __init__(self, files: dict | None = None):
        self.files = dict(files or {})  # path in the repo -> bytes

    @property
    def api(self):
        repo = self

        class Api:
            def __init__(self, token=None):
                pass

            def create_repo(self, repo_id, **kwargs):
                pass

            def upload_folder(self, folder_path, path_in_repo=None, ignore_patterns=None, delete_patterns=None,
                              **kwargs):
                return repo.upload(Path(folder_path), path_in_repo, ignore_patterns or [], delete_patterns or [])

        return Api

    def upload(self, folder: Path, path_in_repo, ignore_patterns, delete_patterns) -> str:
        from fnmatch import fnmatch

        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
        local = {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        local = {rel: data for rel, data in local.items() if not any(fnmatch(rel, p) for p in ignore_patterns)}
        for remote in [name for name in self.files if name.startswith(prefix)]:
            rel = remote[len(prefix):]
            if rel not in local and any(fnmatch(rel, p) for p in delete_patterns):
                del self.files[remote]
        self.files.update({prefix + rel: data for rel, data in local.items()})
        return "https://huggingface.co/fake/commit/1"

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return folder
