"""Loading what `recipes/train_peft.py` saved: a whole model, or PEFT adapters with their base model.

A folder (or Hub repo) holds either a model (``config.json`` + weights) or adapters (``adapter_config.json``);
adapters on a randomly initialised base model have it beside them in ``base_model/`` (saved by training),
otherwise ``base_model_name_or_path`` names it: a Hub id, or a local folder (training records its absolute path;
a relative one, as older runs and hand-edited files have, is read from the working directory, else from the
adapters' folder). ``base_model=`` gives its location when it is neither. An RGCL model's retrieval index lies
beside its adapters. The Hub options (``revision``, ``token``, ``cache_dir``, ...) apply to everything read from
the model's repo; a base model in a repo of its own is read at the revision adapter_config.json records.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hm_hf.fileio import read_json_object
from hm_hf.hub import hub_options, model_file, model_path, other_repo_options, warn_without_safetensors

__all__ = ["BASE_MODEL_DIR", "base_config", "folders_to_push", "load_trained_model", "local_base_model_to_push"]

BASE_MODEL_DIR = "base_model"

logger = logging.getLogger(__name__)


def _load_model(location: str, **kwargs):
    """A saved model for prediction, from a folder or Hub id: its weights as safetensors only (a
    ``pytorch_model.bin`` is a pickle, never opened), and every weight from the file: a missing, unexpected or
    mis-shaped one is an error naming the checkpoint, since a prediction from randomly initialised weights looks
    like any other (a truncated file, a config.json of another model type)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    kwargs.setdefault("use_safetensors", True)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(location, output_loading_info=True, **kwargs)
    except SafetensorError as err:
        raise OSError(f"{location}: its safetensors weights cannot be read ({err}): the file is damaged or "
                      "truncated; download the model again, or save it again with save_pretrained") from None
    except OSError as err:
        if kwargs["use_safetensors"] and Path(location).expanduser().is_dir() and \
                not any(Path(location).expanduser().glob("*.safetensors")):
            raise OSError(f"{location}: no safetensors weights (model.safetensors); hm_hf never unpickles a "
                          "pytorch_model.bin: load it yourself if you made it, and save it again with "
                          "save_pretrained") from err
        raise
    kinds = (("missing", "missing_keys"), ("unexpected", "unexpected_keys"), ("mis-shaped", "mismatched_keys"))
    wrong = {what: sorted(map(str, info[key])) for what, key in kinds if info.get(key)}
    if wrong:
        listed = "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} "
                           f"({len(keys)})" for what, keys in wrong.items())
        raise ValueError(f"{location}: its weights do not fit its config.json ({model.config.model_type}): {listed}. "
                         "A damaged or mismatched checkpoint would predict from random weights: save the model "
                         "again with save_pretrained, or check config.json's model_type")
    return model


def _base_location(base: str, adapters: Path | None) -> str:
    """Where the base model `base` (adapter_config.json's) is: a folder from the working directory, else a
    relative folder beside the adapters (`adapters`: their local folder), else `base` itself (a Hub id)."""
    if Path(base).expanduser().is_dir():
        return base
    if adapters is not None and not Path(base).expanduser().is_absolute() and (adapters / base).is_dir():
        return str(adapters / base)
    return base


def load_trained_model(path: str, base_model: str | None = None, **kwargs):
    """Load what `recipes/train_peft.py` saved (a folder or Hub repo): a model, or base model + adapters.

    `base_model`: where the adapters' base model is (a folder or Hub id), when adapter_config.json names one
    that cannot be found from here (a folder of another machine, or moved). `kwargs`: ``from_pretrained``'s
    (``revision``, ``token``, ``cache_dir``, ``torch_dtype``, ...)."""
    path = os.path.expanduser(str(path))  # a Hub id has no leading ~
    local = Path(path)
    hub = hub_options(kwargs)
    adapter_file = model_file(path, "adapter_config.json", **hub)
    if adapter_file is None:
        return _load_model(path, **kwargs)
    from peft import PeftModel

    settings = read_json_object(adapter_file, "PEFT adapter settings",
                                "save the adapters again (model.save_pretrained)")
    adapters = _adapters_folder(path, hub)  # checked (safetensors only) before the base model is loaded
    base = settings.get("base_model_name_or_path")
    other_repo = other_repo_options(kwargs)  # the adapters' revision is not their base model's
    if base_model is not None:
        base_model = _load_model(str(base_model), **other_repo)
    elif local.is_dir() and (local / BASE_MODEL_DIR).is_dir():
        base_model = _load_model(str(local / BASE_MODEL_DIR), **other_repo)
    elif not local.is_dir() and (travelled := model_path(path, BASE_MODEL_DIR, **hub)) is not None:
        # A Hub repo whose base model travelled with it (a random-init one, or a local folder the push copied),
        # loaded from its downloaded folder: by repo id and `subfolder`, transformers would follow the repo's
        # adapter_config.json to the base model it names instead.
        base_model = _load_model(str(travelled), **other_repo)
    elif base:
        revision = {"revision": settings["revision"]} if settings.get("revision") else {}  # the base's own
        base_model = _load_base(base, adapter_file, local if local.is_dir() else None, **other_repo, **revision)
    else:
        raise OSError(f"{adapter_file}: names no base model (base_model_name_or_path) and {path} has no "
                      f"{BASE_MODEL_DIR}/ folder; pass the base model's location: load_trained_model(path, "
                      "base_model=...) or `hm-hf predict --base-model ...`")
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        model = PeftModel.from_pretrained(base_model, adapters)
    except NoMatchingPeftModuleError as err:
        raise ValueError(f"{adapter_file}: these adapters do not fit the base model they were put on (a "
                         f"{base_config(base_model).model_type} model): {err} Pass the base model they were "
                         "trained on: load_trained_model(path, base_model=...) or `hm-hf predict --base-model ...`"
                         ) from None
    _attach_retrieval_index(base_model, path, hub)
    return model


_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _adapters_folder(path: str, hub: dict) -> str:
    """The folder of the adapters at `path` for peft, holding ``adapter_model.safetensors``: a local folder as it
    is, a Hub repo downloaded with the model's Hub options (given a repo id, peft asks the Hub which weights exist
    even with ``local_files_only``). An ``adapter_model.bin`` alone is refused: it is a pickle, never opened."""
    if Path(path).is_dir():
        folder = Path(path)
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, allow_patterns=list(_ADAPTER_FILES), **hub))
    if not (folder / _ADAPTER_FILES[1]).is_file():
        raise OSError(f"{path}: no {_ADAPTER_FILES[1]} beside its adapter_config.json (hm_hf reads adapter weights "
                      "as safetensors only, never an adapter_model.bin, which is a pickle): save the adapters again "
                      "with model.save_pretrained (and push them)")
    return str(folder)


def local_base_model_to_push(folder) -> Path | None:
    """The local base-model folder that must travel with the adapters in `folder` when they are pushed: the one
    adapter_config.json names when it is a folder on this machine (a Hub id loads anywhere) and `folder` has no
    ``base_model/`` of its own; else None. Without it the pushed adapters would name a path of this machine."""
    folder = Path(folder)
    adapter_file = folder / "adapter_config.json"
    if not adapter_file.is_file() or (folder / BASE_MODEL_DIR).is_dir():
        return None
    base = read_json_object(adapter_file, "PEFT adapter settings",
                            "save the adapters again (model.save_pretrained)").get("base_model_name_or_path")
    location = Path(_base_location(base, folder)) if base else None
    if location is None or not location.is_dir():
        return None
    warn_without_safetensors(location, "the base model")
    return location


def folders_to_push(folder) -> tuple[dict[str, Path], list[str]]:
    """What must travel with the model or adapters in `folder` so that its Hub repo loads on any machine, and what
    an earlier push may have left there that would now mislead: ({path in the repo: local folder}, delete
    patterns for the upload of `folder`). Travelling: the adapters' local base model as ``base_model/``, and a
    local frozen CLIP the model (or that base model) references as ``clip_model/`` (``base_model/clip_model/``).
    The folders are listed in staging order: a base model before the CLIP inside it (which replaces its own)."""
    from hm_hf.models.clip.modeling_clip import CLIP_MODEL_DIR, local_clip_to_push

    folder = Path(folder)
    extra, delete = {}, []
    base = local_base_model_to_push(folder)
    if base is not None:
        extra[BASE_MODEL_DIR] = base
    elif not (folder / BASE_MODEL_DIR).is_dir():
        delete.append(f"{BASE_MODEL_DIR}/**")  # an earlier push's base model would be loaded instead of this one's
    clip = local_clip_to_push(folder)
    if clip is not None:
        extra[CLIP_MODEL_DIR] = clip
    elif not (folder / CLIP_MODEL_DIR).is_dir():
        delete.append(f"{CLIP_MODEL_DIR}/**")
    base_folder = base if base is not None else folder / BASE_MODEL_DIR
    base_clip = local_clip_to_push(base_folder) if base_folder.is_dir() else None
    if base_clip is not None:
        extra[f"{BASE_MODEL_DIR}/{CLIP_MODEL_DIR}"] = base_clip
    elif base is None and base_folder.is_dir() and not (base_folder / CLIP_MODEL_DIR).is_dir():
        delete.append(f"{BASE_MODEL_DIR}/{CLIP_MODEL_DIR}/**")  # the base model's, uploaded with `folder`
    return extra, delete


def _attach_retrieval_index(base_model, path: str, hub: dict) -> None:
    """An RGCL model's index lies beside its adapters (peft saves only those, training writes the index there):
    attach it, as `HmRgclForHatefulMemes.from_pretrained` does for a whole model."""
    from hm_hf.models.rgcl.modeling_rgcl import HmRgclForHatefulMemes, load_retrieval_index

    if isinstance(base_model, HmRgclForHatefulMemes):
        index = load_retrieval_index(path, base_model.config.embedding_dim, **hub)
        base_model.retrieval_index = index or base_model.retrieval_index


def _load_base(base: str, adapter_file: Path, adapters: Path | None, **kwargs):
    """The base model named by adapter_config.json; when it is not a folder here or beside the adapters and does
    not load as a Hub id, an error naming the file, the path and what to do."""
    from huggingface_hub.errors import HFValidationError

    location = _base_location(base, adapters)
    try:
        return _load_model(location, **kwargs)
    except (OSError, HFValidationError) as err:
        if Path(location).expanduser().is_dir():
            raise  # the folder is there: its own error says what is wrong with it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        beside = f" or beside the adapters ({adapters})" if adapters is not None else ""
        raise OSError(
            f"{adapter_file}: the base model of these adapters, base_model_name_or_path {base!r}, is not a folder "
            f"from the working directory ({Path.cwd()}){beside}, and it does not load as a Hub id ({reason}). "
            "Pass the base model's location: load_trained_model(path, base_model=...), "
            "HatefulMemePipeline.from_pretrained(path, base_model=...) or `hm-hf predict --base-model ...`"
        ) from err


def base_config(model):
    """The config of the hm_hf model inside `model` (itself, or the base model of a PEFT wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config
