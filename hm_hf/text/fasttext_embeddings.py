"""fastText sentence vectors for the concat model (`text_embedding` column).

The seed trained an unsupervised fastText model (skipgram, dim 100, minCount 1, epoch 100) on the meme
texts of `train.jsonl` and fed `get_sentence_vector(text)` to its concat model. This module does the same
with three fixes: the text is read straight from the official files of either data set, the model is saved
atomically (fastText's own `.bin` format, not a pickle) next to a small JSON record of how it was made,
and the vectors are added with a cached `datasets.map` step whose fingerprint follows the model file's
content (retraining a model at the same path invalidates the cache).

Text handling: fastText splits on whitespace and its `get_sentence_vector` rejects newlines, so every run
of whitespace (newlines included) becomes one space, for training and embedding alike. The seed did not
lowercase; `lowercase=True` is available and is recorded with the model so embedding matches training.

Example:

```python
>>> from hm_hf.text.fasttext_embeddings import read_split_texts, train_fasttext, add_text_embeddings
>>> texts = read_split_texts("hmd", "data/hateful_memes", "train")
>>> train_fasttext(texts, "models/fasttext.bin")            # the seed's settings
>>> ds = add_text_embeddings(ds, "models/fasttext.bin")     # adds float32 "text_embedding" (dim 100)
```

Command line: `hm-hf train-fasttext --dataset hmd --data-dir data/hateful_memes --output models/fasttext.bin`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hm_hf.cli import positive_int
from hm_hf.data import layouts
from hm_hf.fileio import atomic_path, atomic_write_text, file_in_the_way, read_json_object

__all__ = [
    "SEED_DEFAULTS",
    "clean_text",
    "read_split_texts",
    "train_fasttext",
    "load_fasttext",
    "sentence_vectors",
    "add_text_embeddings",
    "cli",
]

# What the seed used (fastText's own defaults for everything else: lr 0.05, ws 5, minn 3, maxn 6, ...).
SEED_DEFAULTS = {"model": "skipgram", "dim": 100, "min_count": 1, "epoch": 100}
_WHITESPACE = re.compile(r"\s+")
_FORMAT_VERSION = 1


def _import_fasttext():
    try:
        import fasttext  # noqa: PLC0415 (optional dependency, imported lazily)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fastText is not installed. Install the extra with `pip install 'hm_hf[fasttext]'` "
            "(it provides the `fasttext-numpy2` package, which works with NumPy 2)."
        ) from err
    return fasttext


def clean_text(text: str | None, lowercase: bool = False) -> str:
    """One line of text as fastText wants it: whitespace runs (newlines too) -> one space, stripped."""
    if text is None:
        return ""
    text = _WHITESPACE.sub(" ", str(text)).strip()
    return text.lower() if lowercase else text


# --------------------------------------------------------------------------------------------------------
# Reading the text of a split from the official files
# --------------------------------------------------------------------------------------------------------


def _read_hmd(data_dir: Path, split: str) -> list[str]:
    report = layouts.command_report("hmd", data_dir, strict=True)
    return [item["text"] for item in layouts.read_hmd_split(layouts.locate_hmd(data_dir), split, report)]


def _read_mmhs(data_dir: Path, split: str, include_img_text: bool = True) -> list[str]:
    report = layouts.command_report("mmhs", data_dir, strict=True)
    texts = []
    for item in layouts.read_mmhs(layouts.locate_mmhs(data_dir, [split]), report)[split]:
        text = item["tweet_text"]
        if include_img_text:
            img_text, problem = layouts.read_ocr(item["ocr"])
            if problem:
                report.add(*problem, file=layouts.DataFolder(data_dir).relative(item["ocr"]), id=item["id"])
            text = f"{text} {img_text}" if img_text else text
        texts.append(text)
    return texts


def read_split_texts(dataset: str, data_dir, split: str = "train", include_img_text: bool = True) -> list[str]:
    """The raw texts of one split: HMD `<split>.jsonl` `text`; MMHS `tweet_text` (+ OCR `img_text`).

    Read through `hm_hf.data.layouts` as the builders read them, in strict mode: any line a build would
    skip (and any path leading out of the data folder) is an error naming the file and line, so the model
    is trained on exactly the texts of the data set's rows."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        if data_dir.exists():
            raise NotADirectoryError(f"Data folder {data_dir} is a file, not a folder: give the folder that holds "
                                     "the data set's official files (HMD: train.jsonl, ...; MMHS: MMHS150K_GT.json)")
        raise FileNotFoundError(f"Data folder not found: {data_dir}")
    name = dataset.lower()
    if name in ("hmd", "hateful_memes"):
        return _read_hmd(data_dir, split)
    if name in ("mmhs", "mmh", "mmhs150k"):
        return _read_mmhs(data_dir, split, include_img_text=include_img_text)
    raise ValueError(f"Unknown dataset {dataset!r}: expected 'hmd' or 'mmhs'.")


# --------------------------------------------------------------------------------------------------------
# Training and loading
# --------------------------------------------------------------------------------------------------------


def _metadata_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def _output_problem(output_path) -> str | None:
    """Why a model (and its `.json` record) cannot be written at `output_path`, or None.

    Checked before training, which takes minutes, so that a folder or a file in the way is reported at once
    rather than as an OSError from the final rename."""
    output_path = Path(output_path)
    if output_path.is_dir():
        return (f"{output_path} is a folder, not a model file; give a file path for the model, such as "
                f"{output_path / 'fasttext.bin'}")
    if _metadata_path(output_path).is_dir():
        return (f"{_metadata_path(output_path)} is a folder, but the model's settings record is written there; "
                "remove that folder or choose another model path")
    blocker = file_in_the_way(output_path)
    if blocker is not None:
        return (f"{blocker} exists and is not a folder, so {output_path} cannot be written inside it; "
                "choose a model path in a folder")
    return None


# Each training runs in a fresh Python process. fastText (checked with fasttext-numpy2 0.10.4) reads memory
# that it never initialises while training: the first training in a process is deterministic, but later
# ones in the same process give different vectors each time and, after a few dozen, "Encountered NaN".
# A fresh process per training makes every run a first run: reproducible for a fixed thread count of 1.
_CHILD_CODE = """
import json, sys
import numpy as np
import fasttext
job = json.loads(sys.argv[1])
try:
    ft = fasttext.train_unsupervised(job["corpus"], **job["params"])
    if not np.all(np.isfinite(ft.get_sentence_vector(job["first_line"]))):
        raise RuntimeError("training produced non-finite vectors")
    ft.save_model(job["output"])
except Exception as err:
    with open(job["error_file"], "w", encoding="utf-8") as handle:
        handle.write(f"{type(err).__name__}: {err}")
    sys.exit(3)
"""


def _train_in_child(corpus: str, output: str, first_line: str, **params) -> None:
    """Train with `fasttext.train_unsupervised(corpus, **params)` in a fresh process and save to `output`."""
    import subprocess  # noqa: PLC0415

    fd, error_file = tempfile.mkstemp(prefix="hm_hf_fasttext_error.", suffix=".txt")
    os.close(fd)
    try:
        job = {"corpus": corpus, "output": output, "first_line": first_line, "params": params, "error_file": error_file}
        completed = subprocess.run([sys.executable, "-c", _CHILD_CODE, json.dumps(job)], check=False)
        message = Path(error_file).read_text(encoding="utf-8").strip()
    finally:
        Path(error_file).unlink(missing_ok=True)
    if completed.returncode != 0:
        raise RuntimeError(message or f"the fastText training process exited with code {completed.returncode}")


def _check_training_settings(*, dim, min_count, epoch, lr, ws, minn, maxn, neg, bucket, thread) -> None:
    """Settings fastText does not check itself: it dies on a signal (bucket 0 with subwords: SIGFPE; thread < 1:
    abort), trains nonsense (lr <= 0) or reports NaN (minn > maxn) instead of an error naming the setting."""
    for name, value in (("dim", dim), ("min_count", min_count), ("epoch", epoch), ("ws", ws), ("neg", neg)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if thread is not None and (isinstance(thread, bool) or not isinstance(thread, int) or thread < 1):
        raise ValueError(f"thread must be a whole number >= 1 (or None: CPUs - 1), got {thread!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(minn, int) and isinstance(maxn, int) and 0 <= minn <= maxn):
        raise ValueError(f"character n-gram lengths need 0 <= minn <= maxn, got minn {minn!r}, maxn {maxn!r}")
    if not isinstance(bucket, int) or bucket < 0 or (bucket == 0 and maxn > 0):
        raise ValueError(f"bucket must be a whole number >= 1 (0 only with maxn 0: no subwords), got {bucket!r}")


def train_fasttext(
    texts: Iterable[str],
    output_path,
    *,
    model: str = SEED_DEFAULTS["model"],
    dim: int = SEED_DEFAULTS["dim"],
    min_count: int = SEED_DEFAULTS["min_count"],
    epoch: int = SEED_DEFAULTS["epoch"],
    lr: float = 0.05,
    ws: int = 5,
    minn: int = 3,
    maxn: int = 6,
    neg: int = 5,
    bucket: int = 2_000_000,
    thread: int | None = None,
    lowercase: bool = False,
    verbose: int = 0,
    source: str | None = None,
) -> Path:
    """Train an unsupervised fastText model on `texts` and save it atomically at `output_path` (.bin).

    Defaults are the seed's (skipgram, dim 100, minCount 1, epoch 100; fastText's defaults otherwise).
    `bucket` sizes the subword table (bucket x dim floats, 800 MB at the defaults): lower it for small
    corpora. A JSON record of the settings is written next to the model (`<output>.json`), so that
    `add_text_embeddings` applies the same text cleaning. Training runs in a fresh child process (see
    `_train_in_child`), so with `thread=1` the same texts and settings give the same model. Returns the path.
    """
    _import_fasttext()  # a clear message here if the extra is missing; training runs in a child process
    output_path = Path(output_path)
    problem = _output_problem(output_path)
    if problem:
        raise ValueError(problem)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [clean_text(t, lowercase) for t in texts]
    lines = [line for line in lines if line]
    where = f" (from {source})" if source else ""
    if not lines:
        raise ValueError(f"The training corpus{where} is empty: no non-blank text to train fastText on.")
    if model not in ("skipgram", "cbow"):
        raise ValueError(f"model must be 'skipgram' or 'cbow', got {model!r}")
    settings = dict(dim=dim, min_count=min_count, epoch=epoch, lr=lr, ws=ws, minn=minn, maxn=maxn, neg=neg,
                    bucket=bucket)  # checked, and recorded beside the model
    _check_training_settings(**settings, thread=thread)
    fd, corpus = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.corpus.", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        with atomic_path(output_path) as tmp_model:
            _train_in_child(
                corpus,
                str(tmp_model),
                first_line=lines[0],
                model=model,
                dim=dim,
                minCount=min_count,
                epoch=epoch,
                lr=lr,
                ws=ws,
                minn=minn,
                maxn=maxn,
                neg=neg,
                bucket=bucket,
                thread=thread or max(1, (os.cpu_count() or 2) - 1),
                verbose=verbose,
            )
            # The record is written before the model replaces the old one: a run stopped between the two
            # leaves the old model beside a record whose model_bytes do not fit it, which loading refuses.
            metadata = {
                "format_version": _FORMAT_VERSION,
                "model": model,
                **settings,
                "lowercase": lowercase,
                "num_lines": len(lines),
                "source": source,
                "model_bytes": tmp_model.stat().st_size,  # ties the record to this model
            }
            atomic_write_text(_metadata_path(output_path), json.dumps(metadata, indent=2) + "\n")
    except RuntimeError as err:
        if "NaN" in str(err) or "non-finite" in str(err):
            raise RuntimeError(
                f"fastText training{where} diverged ({err}); the corpus is probably too small (too few "
                "distinct words). Use more text, fewer epochs or a lower learning rate."
            ) from err
        raise
    finally:
        Path(corpus).unlink(missing_ok=True)
    return output_path


def _read_metadata(model_path: Path) -> dict:
    path = _metadata_path(model_path)
    if not path.is_file():
        return {}
    fix = "delete it or retrain the model"
    record = read_json_object(path, "fastText training settings", fix)
    if not isinstance(record.get("lowercase", False), bool):  # bool("false") is True
        raise ValueError(f"{path}: lowercase must be true or false, got {record['lowercase']!r}; {fix}")
    size = model_path.stat().st_size
    if record.get("model_bytes", size) != size:  # older records have no model_bytes
        raise ValueError(f"{path} records the settings of a {record['model_bytes']}-byte model, but {model_path} has "
                         f"{size} bytes: it belongs to another model (a training run stopped between the two "
                         "files?); train the model again")
    return record


_FASTTEXT_MAGIC, _FASTTEXT_VERSION = 793712314, 12  # fastText's FASTTEXT_FILEFORMAT_MAGIC_INT32, FASTTEXT_VERSION


def _check_fasttext_file(path: Path) -> None:
    """Refuse a file that is not a whole fastText `.bin` before fastText's C++ loader reads it: that loader
    trusts every size in the file, so a truncated or damaged model kills the process (SIGFPE), allocates
    without bound, or loads with part of its vectors missing. Walks the header (magic, version, 12 int32
    arguments and a double), the dictionary and both dense matrices, and checks they end where the file ends."""
    size = path.stat().st_size
    fix = "train it again or copy it again"
    with path.open("rb") as handle:
        def read(fmt: str):
            data = handle.read(struct.calcsize(fmt))
            if len(data) != struct.calcsize(fmt):
                raise ValueError(f"{path}: truncated fastText model ({size} bytes); {fix}")
            return struct.unpack(fmt, data)

        magic, version = read("<ii")
        if magic != _FASTTEXT_MAGIC or not 11 <= version <= _FASTTEXT_VERSION:
            raise ValueError(f"{path}: not a fastText .bin model (magic {magic}, version {version}); {fix}")
        dim, *_, bucket, _minn, _maxn, _lr_update = read("<12i")
        read("<d")
        words, nwords, nlabels = read("<3i")
        _ntokens, pruned = read("<2q")
        if not 0 < dim <= 100_000 or words < 0 or nwords + nlabels != words or bucket < 0 or pruned < -1:
            raise ValueError(f"{path}: damaged fastText model header (dim {dim}, {words} words); {fix}")
        for _ in range(words):  # each word: its bytes up to a NUL, an int64 count and an int8 type
            while (byte := handle.read(1)) != b"\0":
                if not byte:
                    raise ValueError(f"{path}: truncated fastText model (in its dictionary); {fix}")
            read("<qb")
        handle.seek(8 * max(pruned, 0), os.SEEK_CUR)
        if read("<?")[0]:
            return  # a quantized model (.ftz): hm_hf never writes one; left to fastText
        end = handle.tell()
        for matrix in ("input", "output"):
            handle.seek(end)
            rows, columns = read("<2q")
            if rows < 0 or columns != dim:
                raise ValueError(f"{path}: damaged fastText model ({matrix} matrix {rows} x {columns}, dim {dim}); "
                                 f"{fix}")
            end = handle.tell() + 4 * rows * columns + (1 if matrix == "input" else 0)  # + the qout flag
    if end != size:
        raise ValueError(f"{path}: {'truncated' if end > size else 'damaged'} fastText model ({size} bytes; its own "
                         f"sizes say {end}); {fix}")


def load_fasttext(model_path):
    """Load a fastText `.bin` model, with a clear error when the file is missing, truncated, damaged or not a
    fastText model (checked before fastText reads it)."""
    fasttext = _import_fasttext()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"fastText model not found: {model_path}. Train one with `hm-hf train-fasttext ... --output {model_path}`."
        )
    _check_fasttext_file(model_path)
    try:
        return fasttext.load_model(str(model_path))
    except ValueError as err:
        raise ValueError(f"{model_path}: not a fastText model file ({err}).") from err


def sentence_vectors(model, texts: Sequence[str | None], lowercase: bool = False) -> np.ndarray:
    """(N, dim) float32 sentence vectors of `texts` (cleaned as for training)."""
    out = np.empty((len(texts), model.get_dimension()), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = model.get_sentence_vector(clean_text(text, lowercase))
    return out


_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so each split of a DatasetDict reads it once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256(path)
    return _DIGESTS[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Embedder:
    """The map function: holds only the model path and loads the model lazily in each worker process
    (fastText models cannot be pickled, so `num_proc > 1` needs this)."""

    def __init__(self, model_path: str, text_columns: list[str], column: str, lowercase: bool):
        self.model_path, self.text_columns, self.column, self.lowercase = model_path, text_columns, column, lowercase
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def __call__(self, batch: dict) -> dict:
        if self._model is None:
            self._model = load_fasttext(self.model_path)
        columns = [batch[c] for c in self.text_columns]
        texts = [" ".join(str(part) for part in parts if part) for parts in zip(*columns)]
        return {self.column: sentence_vectors(self._model, texts, self.lowercase)}


def add_text_embeddings(
    dataset,
    model_path,
    text_column: str | Sequence[str] = "text",
    column: str = "text_embedding",
    *,
    lowercase: bool | None = None,
    batch_size: int = 1000,
    num_proc: int | None = None,
    load_from_cache_file: bool | None = None,
):
    """Add a float32 fastText sentence-vector column to a `datasets.Dataset` (or each split of a DatasetDict).

    `text_column` may name several columns (e.g. `["tweet_text", "img_text"]` for MMHS), joined with a
    space. `lowercase` defaults to what the model was trained with (its `.json` record; False otherwise).
    The map's fingerprint is derived from the dataset's fingerprint, the model file's SHA-256 and these
    settings, so re-running is a cache hit and a retrained model is not.
    """
    import datasets  # noqa: PLC0415 (keep `import hm_hf.text...` light)

    model_path = Path(model_path)
    model = load_fasttext(model_path)  # fail early, in the main process, with a clear message
    dim = model.get_dimension()
    del model
    if lowercase is None:
        lowercase = bool(_read_metadata(model_path).get("lowercase", False))
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {
                name: add_text_embeddings(
                    split,
                    model_path,
                    text_columns,
                    column,
                    lowercase=lowercase,
                    batch_size=batch_size,
                    num_proc=num_proc,
                    load_from_cache_file=load_from_cache_file,
                )
                for name, split in dataset.items()
            }
        )

    missing = [c for c in text_columns if c not in dataset.column_names]
    if missing:
        raise KeyError(f"Column(s) {missing} not in the dataset (columns: {dataset.column_names}).")
    features = dataset.features.copy()
    features[column] = datasets.List(datasets.Value("float32"), length=dim)
    fingerprint = datasets.fingerprint.Hasher.hash(
        [
            "hm_hf.add_text_embeddings",
            _FORMAT_VERSION,
            dataset._fingerprint,
            _file_digest(model_path),
            text_columns,
            column,
            lowercase,
        ]
    )
    return dataset.map(
        _Embedder(str(model_path), text_columns, column, lowercase),
        batched=True,
        batch_size=batch_size,
        features=features,
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        load_from_cache_file=load_from_cache_file,
        desc=f"fastText sentence vectors -> {column}",
    )


# --------------------------------------------------------------------------------------------------------
# Command line: hm-hf train-fasttext
# --------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hm-hf train-fasttext",
        description="Train a fastText model on the text of one split (defaults: the seed's settings) and save "
        "it as a fastText .bin file, for the concat model's text_embedding column.",
    )
    parser.add_argument(
        "--dataset", required=True, choices=["hmd", "mmhs"], help="hmd (Hateful Memes) or mmhs (MMHS150K)"
    )
    parser.add_argument("--data-dir", required=True, help="folder with the official files of the data set")
    parser.add_argument("--split", default="train", help="split whose text to train on (default: train)")
    parser.add_argument(
        "--output", required=True, help="where to write the model (.bin); a .bin.json record goes next to it"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model at --output")
    parser.add_argument("--model", default=SEED_DEFAULTS["model"], choices=["skipgram", "cbow"])
    parser.add_argument("--dim", type=positive_int, default=SEED_DEFAULTS["dim"], help="vector size (default: 100)")
    parser.add_argument(
        "--min-count", type=positive_int, default=SEED_DEFAULTS["min_count"], help="minimum word count (default: 1)"
    )
    parser.add_argument("--epoch", type=positive_int, default=SEED_DEFAULTS["epoch"], help="epochs (default: 100)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (fastText default 0.05)")
    parser.add_argument("--ws", type=positive_int, default=5, help="context window (fastText default 5)")
    parser.add_argument("--neg", type=positive_int, default=5, help="negatives sampled (fastText default 5)")
    parser.add_argument("--minn", type=int, default=3, help="min char n-gram length (default 3)")
    parser.add_argument("--maxn", type=int, default=6, help="max char n-gram length (default 6)")
    parser.add_argument(
        "--bucket", type=int, default=2_000_000, help="subword buckets (default 2,000,000: an 800 MB model at dim 100)"
    )
    parser.add_argument("--thread", type=positive_int, default=None, help="training threads (default: CPUs - 1)")
    parser.add_argument(
        "--lowercase", action="store_true", help="lowercase the text (the seed did not); recorded with the model"
    )
    parser.add_argument("--no-img-text", action="store_true", help="MMHS: leave out the OCR text (img_txt/<id>.json)")
    parser.add_argument("--quiet", action="store_true", help="no fastText progress output")
    return parser


def cli(argv: list[str] | None = None) -> int:
    """`hm-hf train-fasttext`: returns a process exit code."""
    args = _parser().parse_args(argv)
    output = Path(args.output)
    problem = _output_problem(output)
    if problem:
        print(f"error: {problem}.", file=sys.stderr)
        return 2
    if output.exists() and not args.overwrite:
        print(f"error: {output} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    settings = dict(dim=args.dim, min_count=args.min_count, epoch=args.epoch, lr=args.lr, ws=args.ws, minn=args.minn,
                    maxn=args.maxn, neg=args.neg, bucket=args.bucket, thread=args.thread)
    try:
        _check_training_settings(**settings)
    except ValueError as err:  # before the data is read
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        texts = read_split_texts(args.dataset, args.data_dir, args.split, include_img_text=not args.no_img_text)
        source = f"{args.dataset} {args.split} in {args.data_dir}"
        train_fasttext(
            texts,
            output,
            model=args.model,
            **settings,
            lowercase=args.lowercase,
            verbose=0 if args.quiet else 2,
            source=source,
        )
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:  # OSError: e.g. no permission
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fastText model ({args.model}, dim {args.dim}) trained on {len(texts)} texts written to {output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
