"""The Hub, in one place: reading a file of a model folder or Hub repo, and pushing a folder (a trained
model, an exported data set, the Space).

The token comes from the argument, `HF_TOKEN` or the cached login and is never printed or logged. Offline
(`HF_HUB_OFFLINE=1`) or without network the push fails with one clear `PushError` that says where the
files are, so the caller can run it after everything has been saved locally and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


#: the download options every hm_hf loader takes and passes on together (the names of transformers'
#: ``from_pretrained`` and huggingface_hub's downloads), so that a model, its processor, decision policy,
#: adapters, travelled base model, index and detector all come from the same revision, cache and token
HUB_OPTIONS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


def hub_options(kwargs: dict) -> dict:
    """The Hub download options among `kwargs` (those set: a None is left out)."""
    return {name: kwargs[name] for name in HUB_OPTIONS if kwargs.get(name) is not None}


def unusable_location(path: str) -> str | None:
    """Why `path` can name neither a model folder nor a Hub repo, for the caller's message: "is a file", or "not
    found" for a path that looks local (``./``, ``/``, ``~``, an existing first folder, not of the ``org/name``
    form) and does not exist; else None. Checked before any download, which would retry such a name for a minute."""
    if Path(path).expanduser().is_file():
        return "is a file"
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1 or Path(path.split("/")[0]).is_dir()
    if looks_local and not Path(path).expanduser().exists():
        return "not found"
    return None


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a Hub repo id (``org/name``), or None: checked before long work that ends in a push."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return str(err).strip().splitlines()[0]
    return None


def local_reference(name_or_path) -> str:
    """How a model records a folder or Hub repo it reads (a base model, a CLIP checkpoint): a local folder by
    its absolute path (what reads it may run from another directory), a Hub id as it is."""
    local = Path(name_or_path).expanduser()
    return str(local.resolve()) if local.is_dir() else str(name_or_path)


def other_repo_options(options: dict) -> dict:
    """`options` for a part in a repo of its own (a base model, a detector, a CLIP named by Hub id): the model's
    revision is not that repo's; the rest (token, cache, offline) applies."""
    return {name: value for name, value in options.items() if name != "revision"}


def model_file(path: str, name: str, **options) -> Path | None:
    """The file `name` of a local model folder or a Hub repo id `path`; None when it is not there. `options`:
    `HUB_OPTIONS` (``revision``, ``token``, ``cache_dir``, ...), used for a Hub repo. As transformers does for
    optional files, one that is neither in the cache nor reachable (offline, ``local_files_only``) is absent."""
    local = Path(path)
    if local.is_dir():
        return local / name if (local / name).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(path, name, **hub_options(options)))
    except EntryNotFoundError:
        return None


def model_path(path: str, name: str, **options) -> Path | None:
    """The file or folder `name` (relative) inside a local model folder, or inside the Hub repo `path` (what it
    holds under `name` is downloaded, into the repo's snapshot); None when it is not there. Paths saved in a
    model's settings are relative to the model, never to the working directory. `options`: as `model_file`'s."""
    local = Path(path)
    if local.is_dir():
        return local / name if (local / name).exists() else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        root = Path(snapshot_download(path, allow_patterns=[name, f"{name}/**"], **hub_options(options)))
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError):  # not a repo, not cached offline, ...
        return None
    return root / name if (root / name).exists() else None


class PushError(RuntimeError):
    """The push failed; the local folder is complete and can be pushed again later."""


#: training_args.bin: Trainer's pickle of the TrainingArguments, hub_token included; hm_hf never reads it
MODEL_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.tmp", ".*", "**/.*", "training_args.bin"]
#: left out of the folders that travel with a model (a local base model or CLIP checkpoint): pickled or
#: framework-specific weights, which hm_hf never loads from a repo (safetensors are read) and which would only
#: add gigabytes
PICKLED_WEIGHT_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.h5", "*.msgpack", "*.ot"]


def warn_without_safetensors(folder: Path, what: str) -> None:
    """Warn when a folder that is to travel with a pushed model (`what`: "the base model") has no safetensors
    weights: `push_folder` leaves the others behind, so the pushed model would not load."""
    if not any(Path(folder).glob("*.safetensors")):
        logger.warning("%s at %s has no safetensors weights, and only those travel with a pushed model: save it "
                       "again with save_pretrained before pushing", what, folder)


def _stage(folder: Path, patterns: list[str], extra_folders: dict, staging: Path) -> None:
    """Lay `folder` and its `extra_folders` out in `staging` as the repo will hold them, with links to the files
    (no copy of the weights), each filtered as `upload_folder` filters; an extra folder replaces what `folder` has
    at its path."""
    from huggingface_hub.utils import filter_repo_objects

    trees = [("", folder, patterns)] + [(path_in_repo, Path(extra), patterns + PICKLED_WEIGHT_PATTERNS)
                                        for path_in_repo, extra in extra_folders.items()]
    for path_in_repo, source, ignore in trees:
        shutil.rmtree(staging / path_in_repo, ignore_errors=True)
        files = {path.relative_to(source).as_posix(): path for path in sorted(source.rglob("*")) if path.is_file()}
        for relative in filter_repo_objects(list(files), ignore_patterns=ignore):
            target = staging / path_in_repo / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(files[relative].resolve(), target)
            except OSError:  # no symbolic links here (Windows without the right): a copy
                shutil.copy2(files[relative], target)


def push_folder(folder, repo_id: str, *, private: bool = True, token: str | None = None,
                repo_type: str = "model", commit_message: str = "Upload with hm_hf",
                ignore_patterns: list[str] | None = None, create_repo_kwargs: dict | None = None,
                extra_folders: dict | None = None, delete_patterns: list[str] | None = None) -> str:
    """Create `repo_id` (private by default; an existing repo keeps its visibility) and upload `folder`.

    `create_repo_kwargs` go to `HfApi.create_repo` (a Space's `space_sdk` and `space_variables`);
    `extra_folders` ({path in the repo: local folder}, an adapters' local base model as ``base_model/``) travel
    in the same commit (less `PICKLED_WEIGHT_PATTERNS`), each replacing what the repo held at that path: one
    commit, so a failed push never leaves the repo with one push's base model under another's adapters;
    `delete_patterns`: remote files the upload removes (what an earlier push left)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    patterns = MODEL_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"

    def leaving_out(ignored):  # the same files as this push (training_args.bin holds a --hub_token)
        return "".join(f" --exclude {shlex.quote(pattern)}" for pattern in ignored)

    commands = [f"`hf upload{kind} {repo_id} {extra} {path_in_repo}{leaving_out(patterns + PICKLED_WEIGHT_PATTERNS)}`"
                for path_in_repo, extra in (extra_folders or {}).items()]
    commands.append(f"`hf upload{kind} {repo_id} {folder}{leaving_out(patterns)}`")
    retry = f"the files are saved in {folder}; push them later with {', then '.join(commands)}"
    delete = list(dict.fromkeys([*(delete_patterns or []), *(f"{path}/**" for path in extra_folders or {})]))
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hm_hf-push-") as staging:
        if extra_folders:
            _stage(folder, patterns, extra_folders, Path(staging))
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **(create_repo_kwargs or {}))
            info = api.upload_folder(repo_id=repo_id, repo_type=repo_type,
                                     folder_path=staging if extra_folders else str(folder),
                                     commit_message=commit_message, ignore_patterns=patterns,
                                     **({"delete_patterns": delete} if delete else {}))
        except HFValidationError as err:
            raise PushError(f"cannot push to {repo_id}: not a Hub repo id ({err}); {retry}") from None
        except OfflineModeIsEnabled:
            raise PushError(f"cannot push to {repo_id}: offline mode is enabled (HF_HUB_OFFLINE); {retry}") from None
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            raise PushError(f"cannot push to {repo_id} (HTTP {status}); {retry}") from None
        except (HTTPError, OSError) as err:  # no network: the HTTP client's transport errors, or OSErrors
            raise PushError(f"cannot push to {repo_id}: {type(err).__name__} (no network?); {retry}") from None
    logger.info("pushed %s to %s (%s)", folder, repo_id, "private" if private else "public")
    return str(getattr(info, "commit_url", info))
