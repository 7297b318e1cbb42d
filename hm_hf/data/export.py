"""Export a prepared data set as Parquet shards plus its dataset card, and optionally push it to the Hub.

The folder loads with stock `datasets` and no hm_hf code::

    <out>/README.md                         the card; its YAML `configs:` maps each config's splits
    <out>/<config>/<split>-00000-of-00001.parquet

    datasets.load_dataset("<out>")              # config "default"
    datasets.load_dataset("<out>", "regions")   # or, once pushed, load_dataset("org/name", "regions")

Images are embedded as bytes (datasets' `embed_table_storage`), not stored as local paths. Exporting a
second config into the same folder adds it to the card's `configs`; re-exporting a config replaces it.

CLI: ``hm-hf export-dataset --dataset hmd|mmhs --data-dir D --output O [--config default|regions]
[--feature-cache F] [--card README.md] [--max-shard-size 500MB] [--push-to-hub org/name] [--public]``.
Only the files a card links by relative path travel with it, never the rest of its folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets.table import embed_table_storage, table_cast

from hm_hf.fileio import atomic_path, atomic_write_bytes, file_in_the_way, public_mode
from hm_hf.hub import repo_id_problem

logger = logging.getLogger(__name__)

CARD_FOLDERS = {"hateful_memes": "hateful_memes", "mmhs150k": "mmhs150k"}
DATASET_CHOICES = {"hmd": "hateful_memes", "mmhs": "mmhs150k"}
ROWS_PER_GROUP = 100  # Parquet row groups of images stay small enough to read one at a time
#: the Hub's size_categories (upper bounds of the number of rows)
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                   (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                   (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
#: keys of a real data set's card that do not hold for hm_hf.synthetic's data (its licence, gating, viewer)
REAL_DATA_KEYS = ("license_name", "license_link", "viewer", "extra_gated_heading", "extra_gated_prompt",
                  "extra_gated_fields")
SYNTHETIC_NOTE = ("> **Synthetic data.** Made by `hm-hf make-synthetic` (hm_hf.synthetic): coloured shapes and "
                  "made-up words in the {name} format, no real meme. The rest of this card describes the format "
                  "of the real data set; its licence and size do not apply here.\n")


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a data set of `rows` rows."""
    return next((name for bound, name in SIZE_CATEGORIES if rows < bound), "n>1T")


def dataset_scripts_dir() -> Path:
    """The dataset_scripts/ folder with the cards: beside the hm_hf package in a checkout or editable
    install, else where a wheel install puts it (`<prefix>/share/hm_hf/dataset_scripts`, setup.cfg's
    data_files)."""
    checkout = Path(__file__).resolve().parents[2] / "dataset_scripts"
    installed = Path(sys.prefix) / "share" / "hm_hf" / "dataset_scripts"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


class ExportError(ValueError):
    """A bad argument, output folder or card: the message names it and says what to do."""


def parse_size(size) -> int:
    """"500MB" / "2GB" / 1000 -> bytes (more than 0)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(size), re.IGNORECASE)
        if not match:
            raise ExportError(f"cannot read the size {size!r}: use a number of bytes or e.g. 500MB, 2GB, 1GiB")
        units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
        value = int(float(match.group(1)) * units[(match.group(2) or "").upper()])
    if value < 1:
        raise ExportError(f"the size {size!r} must be at least one byte; use e.g. 500MB")
    return value


def split_card(text: str, name="the dataset card") -> tuple[dict, str]:
    """(YAML header, body) of a dataset card; a header that is not a YAML mapping raises ExportError naming
    `name`, since the card's `configs` are merged into it."""
    if text.startswith("---"):
        parts = text.split("\n---", 1)
        if len(parts) == 2:
            fix = "fix the YAML between the '---' lines, or move the file away"
            try:
                header = yaml.safe_load(parts[0][3:]) or {}
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)  # 0-based in the text after the first "---": the file's line
                where = f"{name}, line {mark.line + 1}" if mark is not None else name
                problem = getattr(err, "problem", None) or " ".join(str(err).split())
                raise ExportError(f"{where}: cannot read its YAML header ({problem}); {fix}") from None
            if not isinstance(header, dict):
                raise ExportError(f"{name}: its YAML header is a {type(header).__name__}, not a mapping "
                                  f"(key: value lines); {fix}")
            body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
            return header, body
    return {}, text


def read_card(path) -> tuple[dict, str]:
    """split_card of the file `path`, with errors that name it; `configs`, when there, must be a list of
    mappings with a config_name (the form the Hub reads), since export rewrites it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ExportError(f"{path}: not UTF-8 text; save the card as UTF-8, or move the file away") from None
    header, body = split_card(text, str(path))
    configs = header.get("configs")
    if configs is not None and not (isinstance(configs, list) and all(
            isinstance(c, dict) and isinstance(c.get("config_name"), str) for c in configs)):
        raise ExportError(f"{path}: `configs` in its YAML header must be a list of entries with a config_name; "
                          "fix it, or delete `configs` (export rewrites it)")
    return header, body


def card_files(card) -> list[Path]:
    """The files a card links to by relative path (`[..](x)`, `![..](x)`, `src="x"`, `href="x"`) that lie
    in the card's folder or below it (symbolic links included), as paths relative to that folder.

    Only these travel with the card into the export (its images, a LICENSE note it points to): other files
    beside it (notes, credentials) are never copied, since the export may be pushed to the Hub.
    """
    card = Path(card)
    folder = card.parent.resolve()
    text = card.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)", text) + re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text)
    found: list[Path] = []
    for target in targets:
        target = target.split("#", 1)[0].split("?", 1)[0]
        if not target or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):
            continue  # an anchor or a URL (https:, mailto:)
        relative = Path(os.path.normpath(target))
        if relative in found or relative.name == "README.md" or not (card.parent / relative).is_file():
            continue
        inside = not relative.is_absolute() and relative.parts[0] != ".." and (
            card.parent / relative).resolve().is_relative_to(folder)
        if not inside or any(part.startswith(".") for part in relative.parts):
            logger.warning("%s links %s, which is hidden or outside the card's folder: not copied", card, target)
            continue
        found.append(relative)
    return found


def check_output(out: Path) -> None:
    """Refuse an output that is a file, or lies under one, before the build, so nothing is lost to it."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} is a file, not a folder; name a folder (it is created if missing)")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ExportError(f"output {out}: {blocker} is a file, not a folder; name another output folder")
    if (out / "README.md").exists() and not (out / "README.md").is_file():
        raise ExportError(f"output {out}: README.md there is not a file; the card goes there: move it away")


def render_card(header: dict, body: str) -> str:
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=100) + "---\n" + body


def _write_split(dataset: datasets.Dataset, folder: Path, split: str, max_bytes: int) -> list[str]:
    """Write one split as Parquet shards with embedded images; return the file names."""
    features = dataset.features
    schema = features.arrow_schema
    written: list[Path] = []
    writer, shard_bytes = None, 0
    try:
        batches = dataset.with_format("arrow").iter(batch_size=ROWS_PER_GROUP) if len(dataset) else []
        for batch in batches:
            table = embed_table_storage(table_cast(batch, schema))
            per_row = max(1, table.nbytes // max(1, table.num_rows))
            start = 0
            while start < table.num_rows:  # fill shards up to max_bytes (uncompressed), at least a row each
                if writer is None or shard_bytes >= max_bytes:
                    if writer is not None:
                        writer.close()
                    written.append(folder / f".{split}-{len(written):05d}.parquet")
                    writer, shard_bytes = pq.ParquetWriter(str(written[-1]), schema), 0
                piece = table.slice(start, max(1, (max_bytes - shard_bytes) // per_row))
                writer.write_table(piece, row_group_size=ROWS_PER_GROUP)
                shard_bytes += per_row * piece.num_rows
                start += piece.num_rows
        if writer is None:  # an empty split still gets one (empty) shard, so the split exists
            written.append(folder / f".{split}-00000.parquet")
            pq.write_table(pa.Table.from_batches([], schema=schema), str(written[-1]))
    finally:
        if writer is not None:
            writer.close()
    names = []
    for index, path in enumerate(written):
        name = f"{split}-{index:05d}-of-{len(written):05d}.parquet"
        os.replace(path, folder / name)
        names.append(name)
    return names


def export_dataset(data, out_dir, card=None, config_name: str | None = None, max_shard_size="500MB",
                   push_to_hub: str | None = None, private: bool = True, token=None,
                   dataset_name: str | None = None) -> Path:
    """Write `data` (a DatasetDict, or a builder from hm_hf.data) as Parquet + card into `out_dir`.

    card: a dataset card (README.md) to use as the template; by default dataset_scripts/<name>/README.md
    for a builder's data set. Its YAML `configs` is rewritten to list the configs exported to
    `out_dir`. push_to_hub: "org/name" to upload the folder as a dataset repo (private unless
    private=False; the token comes from `token`, HF_TOKEN or the cached login and is never printed).
    HMD's images may not be redistributed, so a public push of Hateful Memes is refused (of its synthetic
    stand-in, made by hm_hf.synthetic, allowed).
    """
    from hm_hf.data.builder_base import MemeBuilder
    from hm_hf.synthetic.data import is_synthetic

    synthetic = isinstance(data, MemeBuilder) and is_synthetic(data.folder.path)  # hm_hf's drawings, not Meta's
    if isinstance(data, MemeBuilder):
        dataset_name = dataset_name or data.DATASET_LABEL
    if push_to_hub and not private and dataset_name == "hateful_memes" and not synthetic:
        raise ExportError("Hateful Memes images may not be redistributed: refusing a public push; push it "
                          "privately (the default: drop --public) and share it through the gated repo's access "
                          "requests")
    # everything that can be refused is checked before the (long) build and before anything is written
    max_bytes = parse_size(max_shard_size)
    if push_to_hub and (problem := repo_id_problem(push_to_hub)):
        raise ExportError(f"--push-to-hub {push_to_hub!r} is not a Hub repo id ({problem}); give org/name")
    if isinstance(data, MemeBuilder):
        config_name = config_name or data.config.name
    config_name = config_name or "default"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", config_name):
        raise ExportError(f"config name {config_name!r} must be letters, digits, '_', '-' or '.'")
    out = Path(out_dir)
    check_output(out)
    if card is None and dataset_name in CARD_FOLDERS:
        card = dataset_scripts_dir() / CARD_FOLDERS[dataset_name] / "README.md"
    existing = read_card(out / "README.md") if (out / "README.md").is_file() else None
    template = read_card(card) if card is not None and Path(card).is_file() else None

    if isinstance(data, MemeBuilder):
        data.download_and_prepare()
        data = data.as_dataset()
    if not isinstance(data, (datasets.DatasetDict, dict)):
        raise TypeError(f"export_dataset needs a DatasetDict or an hm_hf builder, not {type(data).__name__}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"output {out}: cannot create the folder ({err.strerror}); name another folder") from None

    # 1. shards, written next to their final place and swapped in at the end
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{config_name}.tmp-"))
    try:
        public_mode(staging)  # it becomes <out>/<config>, which others read
        data_files = []
        for split, dataset in data.items():
            _write_split(dataset, staging, split, max_bytes)
            data_files.append({"split": split, "path": f"{config_name}/{split}-*.parquet"})
        final = out / config_name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

    # 2. the card: template header/body, `configs` = what the folder holds now
    existing_configs = (existing[0].get("configs") or []) if existing else []
    if template is not None:
        header, body = template
    elif existing is not None:
        header, body = existing
    else:
        if card is not None:
            logger.warning("dataset card %s not found; writing a minimal card", card)
        header, body = {}, f"\n# {dataset_name or out.name}\n\nExported with `hm-hf export-dataset`.\n"
    configs = [c for c in existing_configs
               if c["config_name"] != config_name and (out / c["config_name"]).is_dir()]
    header = dict(header)
    header["size_categories"] = [size_category(sum(len(split) for split in data.values()))]
    if synthetic:  # not the real data set: not its name, licence or gating
        for key in REAL_DATA_KEYS:
            header.pop(key, None)
        name = header.get("pretty_name") or dataset_name
        real_name = name.removeprefix("Synthetic ").removesuffix(" (hm_hf.synthetic)")  # a card exported before
        header["pretty_name"] = f"Synthetic {real_name} (hm_hf.synthetic)"
        header["license"] = "apache-2.0"  # hm_hf's own: the memes are its drawings
        header["tags"] = list(dict.fromkeys([*(header.get("tags") or []), "synthetic-data"]))
        note = SYNTHETIC_NOTE.format(name=real_name)
        if note not in body:
            body = "\n" + note + body
    entry = {"config_name": config_name, "data_files": data_files}
    if config_name == "default":
        entry["default"] = True
    header["configs"] = sorted(configs + [entry], key=lambda c: (c["config_name"] != "default", c["config_name"]))
    atomic_write_bytes(out / "README.md", render_card(header, body).encode("utf-8"))
    for relative in (card_files(card) if template is not None else []):
        if relative.parts[0] in {c["config_name"] for c in header["configs"]}:
            continue  # never over a config's shards
        with atomic_path(out / relative) as tmp:
            shutil.copyfile(Path(card).parent / relative, tmp)
    logger.info("exported %s (config %s) to %s", dataset_name or "data set", config_name, out)

    if push_to_hub:
        push_folder(out, push_to_hub, private=private, token=token)
    return out


def push_folder(folder, repo_id: str, private: bool = True, token=None) -> str:
    """Upload `folder` as the dataset repo `repo_id` (created private unless private=False)."""
    from hm_hf.hub import push_folder as push

    push(folder, repo_id, private=private, token=token, repo_type="dataset",
         commit_message="Upload data set exported by hm-hf export-dataset", ignore_patterns=[".*", "**/.*"])
    return f"https://huggingface.co/datasets/{repo_id}"


def _size_argument(text: str) -> int:
    """argparse type for --max-shard-size, so a bad size is refused before the build."""
    try:
        return parse_size(text)
    except ExportError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cli(argv: list[str] | None = None) -> int:
    """`hm-hf export-dataset`: build (or reuse) a data set, write Parquet + card, optionally push."""
    parser = argparse.ArgumentParser(
        prog="hm-hf export-dataset",
        description="Write a prepared data set as Parquet shards plus its dataset card (loadable with "
                    "datasets.load_dataset(<output>, <config>)) and optionally push it to the Hub.")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASET_CHOICES))
    parser.add_argument("--data-dir", required=True, help="folder with the data set's files as distributed")
    parser.add_argument("--output", required=True, help="folder to write (created; the config is replaced)")
    parser.add_argument("--config", default="default", choices=["default", "regions"])
    parser.add_argument("--feature-cache", help='feature cache folder, needed by --config regions')
    parser.add_argument("--cache-dir", help="datasets cache folder for the prepared data")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad input instead of skipping")
    parser.add_argument("--card", help="dataset card template (default: dataset_scripts/<name>/README.md); the "
                                       "files it links by relative path (images) are copied along, nothing else")
    parser.add_argument("--max-shard-size", default="500MB", type=_size_argument,
                        help="largest shard, uncompressed (default 500MB; e.g. 200MB, 1GB, 1GiB)")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder as this dataset repo")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    args = parser.parse_args(argv)
    if args.config == "regions" and not args.feature_cache:
        parser.error("--config regions needs --feature-cache")
    if args.card and not Path(args.card).is_file():
        parser.error(f"--card {args.card}: no such file; name the dataset card (README.md) to use as template")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from hm_hf.data.hateful_memes import HatefulMemes
    from hm_hf.data.mmhs150k import MMHS150K

    builder_class = HatefulMemes if args.dataset == "hmd" else MMHS150K
    from hm_hf.data.report import BadInputError
    from hm_hf.extract.cache import FeatureCacheError
    from hm_hf.hub import PushError

    try:
        builder = builder_class(data_dir=args.data_dir, config_name=args.config,
                                feature_cache=args.feature_cache, strict=args.strict, cache_dir=args.cache_dir)
        out = export_dataset(builder, args.output, card=args.card, max_shard_size=args.max_shard_size,
                             push_to_hub=args.push_to_hub, private=not args.public)
    except (BadInputError, ExportError, FileNotFoundError, FeatureCacheError, PushError) as err:
        print(f"hm-hf export-dataset: error: {err}", file=sys.stderr)
        return 1
    report = builder.report
    if report is not None:
        print(report.summary())
    print(f"wrote {out} (config {args.config}); load it with datasets.load_dataset({str(out)!r}, {args.config!r})")
    return 0
