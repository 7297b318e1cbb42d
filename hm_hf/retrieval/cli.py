"""`hm-hf index add <model folder> <data...>` and `hm-hf index show <model folder>`.

``add`` embeds labelled memes with the saved RGCL model's own (frozen) encoder and network and appends them
to the retrieval index saved beside it, so its kNN vote follows them with no retraining. A data argument is
a Hateful-Memes-format split file (``folder/dev_seen.jsonl``: ``id``, ``img``, ``text``, ``label`` lines,
images relative to the file's folder) or a Hateful Memes folder with ``--split`` naming its split.

- resumable: memes whose id is already in the index from the same source are skipped, so re-running after an
  interruption (or on the same file again) adds only what is missing; an id indexed from another source is
  refused (another meme, not a resume); the index is saved every ``--save-every`` memes;
- atomic: each save writes the vectors under a new name and then replaces ``retrieval_index.json``
  (`hm_hf.retrieval.RetrievalIndex.save`), so a crash leaves the previous index;
- bad input is refused before anything is added, naming the file and line (or id): an unreadable line, a
  missing or unlabelled label, an image that cannot be read, an id twice in the input.

Example:
    hm-hf index add outputs/synthetic-tiny-rgcl data/new_memes/train.jsonl
    hm-hf index show outputs/synthetic-tiny-rgcl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hm_hf.cli import positive_int

__all__ = ["add_to_index", "cli", "read_labelled_memes"]


class IndexInputError(ValueError):
    """Input `hm-hf index add` refuses; the message names the file and line or id."""


def _split_files(data: str, split: str | None):
    from hm_hf.data.layouts import DataFolder, HmdFiles, locate_hmd

    path = Path(data)
    if path.is_file():
        if path.suffix != ".jsonl":
            raise IndexInputError(f"{path}: not a .jsonl split file (give folder/<split>.jsonl or a folder with --split)")
        folder = DataFolder(path.parent)
        root = Path(folder.path)  # absolute: the folder's real_path reads a relative path as inside it
        return HmdFiles(folder, "official", root, root), path.stem
    if path.is_dir():
        if not split:
            raise IndexInputError(f"{path} is a folder: name its split with --split (e.g. --split dev_seen)")
        return locate_hmd(path), split
    raise IndexInputError(f"{path}: no such file or folder")


def read_labelled_memes(data: str, split: str | None = None) -> list[dict]:
    """The memes of one data argument (id, text, label, image path, file, line), every problem an error."""
    from hm_hf.data.layouts import check_image, command_report, read_hmd_split
    from hm_hf.data.report import BadInputError

    files, split_name = _split_files(data, split)
    report = command_report("hmd", files.folder.path, strict=True)
    try:
        items = read_hmd_split(files, split_name, report)
    except BadInputError as err:
        raise IndexInputError(str(err)) from None
    for item in items:
        where = f"{item['file']} line {item['line']} (id {item['id']})"
        if item["label"] not in (0, 1):
            raise IndexInputError(f"{where}: no label; only labelled memes (label 0 or 1) can be added to an index")
        problem = check_image(item["image"])
        if problem is not None:
            raise IndexInputError(f"{where}: image {item['image_rel']}: {problem[1]}")
    return items


def _model_settings(folder: Path) -> dict:
    """The saved model's config: its config.json, or for adapters (with an ``adapter_config.json``) their base
    model's, saved by training in ``base_model/``; {} when the folder holds neither."""
    from hm_hf.fileio import read_json_object
    from hm_hf.inference.model_loading import BASE_MODEL_DIR

    candidates = [folder / "config.json"]
    if (folder / "adapter_config.json").is_file():
        candidates.append(folder / BASE_MODEL_DIR / "config.json")
    for path in candidates:
        if path.is_file():
            return read_json_object(path, "model settings", "save the model again (save_pretrained)")
    return {}


def add_to_index(model_folder, data: list[str], split: str | None = None, source: str | None = None,
                 batch_size: int = 32, save_every: int = 512, progress: bool = True) -> dict:
    """Add the labelled memes of `data` to the index saved in `model_folder`; returns what was done."""
    import torch
    from tqdm.auto import tqdm

    from hm_hf.images import load_image
    from hm_hf.inference.model_loading import load_trained_model
    from hm_hf.processing import MemeProcessor
    from hm_hf.retrieval.index import RetrievalIndex
    from hm_hf.models.rgcl.modeling_rgcl import rgcl_model

    folder = Path(model_folder)
    if not _model_settings(folder):
        raise IndexInputError(f"{folder}: not a saved model folder (no config.json, nor adapter_config.json with "
                              "the base model's config.json in base_model/)")
    inputs = [(name, read_labelled_memes(name, split)) for name in data]  # all input checked before any work
    seen: dict[int, str] = {}
    for _, items in inputs:
        for item in items:
            where = f"{item['file']} line {item['line']}"
            if item["id"] in seen:
                raise IndexInputError(f"{where}: id {item['id']} appears twice in the input (first at {seen[item['id']]}); "
                                      "ids must be unique")
            seen[item["id"]] = where
    try:
        model = rgcl_model(load_trained_model(str(folder))).eval()
    except TypeError as err:
        raise IndexInputError(f"{folder}: {err}; `hm-hf index` works on hm_rgcl models") from None
    processor = MemeProcessor.from_pretrained(str(folder), model.config)
    index = model.retrieval_index or RetrievalIndex(model.config.embedding_dim)
    labels = [source or (f"{Path(name).parent.name}/{Path(name).stem}" if Path(name).is_file()
                         else f"{Path(name).name}/{split}") for name, _ in inputs]
    indexed_from = dict(zip(index.ids, index.sources))
    for label, (_, items) in zip(labels, inputs):  # an id indexed from this source: resumed; from another: a clash
        for item in items:
            if indexed_from.get(item["id"], label) != label:
                raise IndexInputError(
                    f"{item['file']} line {item['line']}: id {item['id']} is already in the index, from source "
                    f"{indexed_from[item['id']]!r}, not {label!r}: give these memes ids of their own (ids must be "
                    "unique), or, if they are the memes indexed then, add them again with --source "
                    f"{indexed_from[item['id']]!r}")
    added, skipped = 0, 0
    for label, (name, items) in zip(labels, inputs):
        todo = [item for item in items if item["id"] not in index]
        skipped += len(items) - len(todo)
        pending: list[tuple[torch.Tensor, dict]] = []
        bar = tqdm(total=len(todo), desc=f"index add {name}", unit="meme", disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            rows = []
            for item in chunk:
                row = {processor.text_column: item["text"], "label": item["label"]}
                if "pixels" in processor.model_inputs:
                    row[processor.image_column] = load_image(item["image"], max_pixels=processor.max_pixels)
                rows.append(row)
            batch = processor(rows)
            batch.pop("labels", None)
            vectors = model.embed(**{k: v.to(model.device) for k, v in batch.items()})
            pending += list(zip(vectors, chunk))
            bar.update(len(chunk))
            if len(pending) >= save_every or start + batch_size >= len(todo):
                index.add(torch.stack([v for v, _ in pending]), [i["label"] for _, i in pending],
                          [i["id"] for _, i in pending], source=label)
                index.save(folder)  # a checkpoint: an interrupted run resumes after it
                added += len(pending)
                pending = []
        bar.close()
    model.retrieval_index = index
    return {"added": added, "skipped_already_indexed": skipped, "size": len(index), "sources": index.source_counts()}


def show(model_folder) -> dict:
    from hm_hf.retrieval.index import RetrievalIndex

    folder = Path(model_folder)
    if not RetrievalIndex.files_in(folder):
        raise IndexInputError(f"{folder}: no retrieval index (retrieval_index.json) in this folder")
    index = RetrievalIndex.load(folder)
    config = _model_settings(folder)
    labels = index.labels
    return {"size": len(index), "dim": index.dim, "sources": index.source_counts(),
            "hateful": sum(labels), "benign": len(labels) - sum(labels),
            "decision_rule": config.get("decision_rule"), "knn_k": config.get("knn_k"), "knn_vote": config.get("knn_vote")}


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hm-hf index", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add labelled memes to a saved RGCL model's index")
    add.add_argument("model_folder")
    add.add_argument("data", nargs="+", help="split files (folder/<split>.jsonl) or Hateful Memes folders (--split)")
    add.add_argument("--split", default=None, help="the split to read from a folder argument")
    add.add_argument("--source", default=None, help="the source name recorded for these memes (default: folder/split)")
    add.add_argument("--batch-size", type=positive_int, default=32)
    add.add_argument("--save-every", type=positive_int, default=512, help="save the index after this many new memes")
    show_parser = sub.add_parser("show", help="size and sources of a saved index")
    show_parser.add_argument("model_folder")
    args = parser.parse_args(argv)
    try:
        if args.action == "add":
            result = add_to_index(args.model_folder, args.data, split=args.split, source=args.source,
                                  batch_size=args.batch_size, save_every=args.save_every)
        else:
            result = show(args.model_folder)
    except (ValueError, FileNotFoundError) as err:  # IndexInputError, IndexError_, a damaged config.json
        print(f"hm-hf index: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0
