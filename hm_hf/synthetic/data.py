"""Tiny synthetic data sets in the exact on-disk formats of Hateful Memes and MMHS150K.

They are the embedded default for the README's main job, the tests and the benchmarks, since the real
data cannot be downloaded here (and HMD's images may not be redistributed).

Like HMD's benign confounders, a label depends on the *combination* of image and text: every image shows
one of two kinds of object (a red square or a blue disc) and every caption carries one of two kinds of
keyword; the meme is hateful when exactly one of the two is of the first kind (an XOR). In the evaluation
splits each caption is paired with both kinds of image and both kinds of caption are equally common, so a
text-only or image-only model stays at chance there and only a model that looks at both can do well. The
training split also holds memes outside such pairs (as HMD's does), which gives learning a foothold.

`make_fine_grained` writes the WOAH 2021 fine-grained annotation files (protected categories and attack
types, `world.keyword_targets`) for a synthetic Hateful Memes folder, in the shared task's format.

`write_region_features` writes what a detector would give for these images (the drawn objects' boxes
and one 2048-d vector per region that encodes the object's kind, plus noise) into a real feature cache,
so region models can be trained end to end without running a detector. These features are synthetic
and are recorded as such in the cache; the data folder itself carries `SYNTHETIC_MARKER`, so whatever is
trained on it (model card, the processor's `processor_config.json`, the Space) says it was trained on
synthetic data.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hm_hf.synthetic.world import (
    DETECTOR_NAME,
    DISTRACTOR_COLORS,
    FEATURE_NOISE_STD,
    KEYWORDS,
    OBJECT_COLORS,
    WHOLE_IMAGE,
    keyword_targets,
    region_prototypes,
)

SYNTHETIC_MARKER = "hm_hf_synthetic.json"  # in every folder written here; see `is_synthetic`
HMD_SPLITS = {"train": 160, "dev_seen": 40, "dev_unseen": 40, "test_seen": 40, "test_unseen": 40}
HMD_UNLABELED = ("test_seen", "test_unseen")  # as first released: no `label` field
MMHS_SPLITS = {"train": 160, "val": 40, "test": 40}
MMHS_CLASSES = ["NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate"]

# A caption carries exactly one keyword (see `world`). Filler words come from a generated vocabulary of
# a few thousand distinct words (fastText needs a real vocabulary to train without NaNs).
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["sh", "th", "qu"]


@dataclass
class SyntheticMeme:
    """One generated meme and the hidden factors behind its label."""

    id: int
    text: str
    image_kind: int
    text_kind: int
    boxes: list = field(default_factory=list)  # [(x1, y1, x2, y2, region kind)], kind >= 2 = distractor
    image_size: tuple[int, int] = (0, 0)  # (width, height), set when drawn

    @property
    def label(self) -> int:
        return int(self.image_kind != self.text_kind)


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _caption(rng: random.Random, vocab: list[str], text_kind: int) -> str:
    words = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[text_kind]))
    return " ".join(words)


def _draw(meme: SyntheticMeme, rng: random.Random, size: tuple[int, int]) -> Image.Image:
    width, height = size
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.randint(1, 5)):  # distractors: variable region counts per image
        w, h = rng.randint(width // 12, width // 5), rng.randint(height // 12, height // 5)
        x, y = rng.randint(0, width - w - 1), rng.randint(height // 5, height - h - 1)
        kind = rng.randrange(len(DISTRACTOR_COLORS))
        draw.rectangle([x, y, x + w, y + h], fill=DISTRACTOR_COLORS[kind])
        boxes.append((x, y, x + w, y + h, 2 + kind))
    side = rng.randint(min(size) // 3, min(size) // 2)
    x, y = rng.randint(0, width - side - 1), rng.randint(height // 5, height - side - 1)
    shape = draw.rectangle if meme.image_kind == 0 else draw.ellipse
    shape([x, y, x + side, y + side], fill=OBJECT_COLORS[meme.image_kind], outline=(0, 0, 0))
    boxes.append((x, y, x + side, y + side, meme.image_kind))
    font = ImageFont.load_default(size=max(10, height // 14))
    lines, line = [], ""
    for word in meme.text.split():  # wrap to the image width so the whole caption is readable (OCR)
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width - 12:
            lines.append(line)
            candidate = word
        line = candidate
    draw.multiline_text((6, 4), "\n".join(lines + [line]), fill=(0, 0, 0), font=font, spacing=2)
    meme.boxes, meme.image_size = boxes, size
    return image


def _memes(n: int, start_id: int, rng: random.Random, vocab: list[str], singles: float = 0.0) -> list[SyntheticMeme]:
    """n memes: confounder pairs (each caption once with each kind of image), plus, where `singles` > 0,
    memes outside any pair in which one of the two factors is of kind 0.

    The label rule is the same for both (the XOR); only the sampling differs. Pairs alone leave no
    first-order signal in either modality, a gradient-descent dead end; the singles give each modality a
    marginal correlation with the label in that split, as HMD's training set (unlike its balanced dev and
    test sets) has memes outside confounder pairs.
    """
    memes = []
    num_singles = int(n * singles)
    for i in range(num_singles):
        kind = rng.randrange(2)
        text_kind, image_kind = (kind, 0) if i % 2 == 0 else (0, kind)
        memes.append(SyntheticMeme(start_id + i, _caption(rng, vocab, text_kind), image_kind, text_kind))
    for i in range(0, n - num_singles, 2):
        text_kind = (i // 2) % 2  # balanced: no modality alone predicts the label of a pair
        text = _caption(rng, vocab, text_kind)
        first = rng.randrange(2)
        for j, image_kind in enumerate((first, 1 - first)):
            if num_singles + i + j < n:
                memes.append(SyntheticMeme(start_id + num_singles + i + j, text, image_kind, text_kind))
    rng.shuffle(memes)
    return memes


TRAIN_SINGLES = 0.4  # share of the training split outside confounder pairs (see `_memes`)


def _generate(splits: dict[str, int], seed: int, start_id: int,
              train_singles: float = TRAIN_SINGLES) -> dict[str, list[SyntheticMeme]]:
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    out, next_id = {}, start_id
    for split, n in splits.items():
        out[split] = _memes(n, next_id, rng, vocab, singles=train_singles if split == "train" else 0.0)
        next_id += n
    return out


def _write_lines(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


class SyntheticOutputError(ValueError):
    """An output folder that synthetic data must not be written into; the message says what to do."""


def _mark_synthetic(out_dir: Path, dataset: str, seed: int) -> None:
    """Mark `out_dir` as synthetic before anything is written to it; a folder that already holds files and no
    marker (a real data set, say the Hateful Memes folder training was pointed at) is refused untouched."""
    if out_dir.exists() and not is_synthetic(out_dir):
        if not out_dir.is_dir():
            raise SyntheticOutputError(f"{out_dir} is a file: give a folder to write the synthetic data set into")
        if any(out_dir.iterdir()):
            raise SyntheticOutputError(
                f"{out_dir} already holds files and was not written by hm_hf.synthetic (it has no "
                f"{SYNTHETIC_MARKER}): synthetic memes would replace or mix with them. Give a new or empty folder "
                "(if it is a real data set, point the command at the folder holding its .jsonl files)")
    out_dir.mkdir(parents=True, exist_ok=True)
    note = {"generator": "hm_hf.synthetic", "dataset": dataset, "seed": seed,
            "content": "coloured shapes and made-up words in the on-disk format of the real data set; no real memes"}
    (out_dir / SYNTHETIC_MARKER).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")


def is_synthetic(data_dir) -> bool:
    """Whether `data_dir` was written by this module (it holds `SYNTHETIC_MARKER`) rather than downloaded."""
    return data_dir is not None and (Path(data_dir) / SYNTHETIC_MARKER).is_file()


def make_hmd(
    out_dir,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    layout: str = "official",
    unlabeled: tuple[str, ...] = HMD_UNLABELED,
    train_singles: float = TRAIN_SINGLES,
) -> dict[str, list[SyntheticMeme]]:
    """Write a Hateful-Memes-format folder (`layout="mmf"` for MMF's defaults/ layout); return the memes.

    `train_singles` is the share of the training split outside confounder pairs (`_memes`); raised, the
    training memes hold few confounders while the evaluation splits stay all confounder pairs.

    Files: `img/NNNNN.png` (id zero-padded to 5 digits), `<split>.jsonl` with `id` (int), `img`, `text`
    and `label` (left out for the `unlabeled` splits, as the test sets were first released), and
    `SYNTHETIC_MARKER`.
    """
    out_dir = Path(out_dir)
    _mark_synthetic(out_dir, "hmd", seed)
    memes = _generate(splits or HMD_SPLITS, seed, start_id=1, train_singles=train_singles)
    image_dir = out_dir / ("defaults/images/img" if layout == "mmf" else "img")
    annotation_dir = out_dir / "defaults/annotations" if layout == "mmf" else out_dir
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    for split, rows in memes.items():
        lines = []
        for meme in rows:
            _draw(meme, rng, image_size).save(image_dir / f"{meme.id:05d}.png")
            line = {"id": meme.id, "img": f"img/{meme.id:05d}.png", "label": meme.label, "text": meme.text}
            if split in unlabeled:
                del line["label"]
            lines.append(line)
        _write_lines(annotation_dir / f"{split}.jsonl", lines)
    return memes


FINE_GRAINED_FILES = {"train": "train.json", "dev_seen": "dev_seen.json", "dev_unseen": "dev_unseen.json"}


def make_fine_grained(hmd_dir, annotations_dir, seed: int = 0) -> dict[str, int]:
    """Write fine-grained annotation files for the synthetic Hateful Memes folder `hmd_dir`, as
    facebookresearch/fine_grained_hateful_memes distributes them, into `annotations_dir`; returns the memes
    written per file.

    `train.json`, `dev_seen.json`, `dev_unseen.json` (JSON lines despite the name): id, img, text, set_name,
    gold_hate, gold_pc, gold_attack (`world.keyword_targets` for hateful memes, `["pc_empty"]` /
    `["attack_empty"]` otherwise) and each of three annotators' lists in pc / attack (one of them sometimes
    naming a single label of a multi-label set; the string "None" on not-hateful memes), in the released key
    order; `test.jsonl` (id, img, text, the slash escaped, no final newline) from test_seen, as released.
    """
    from hm_hf.data.layouts import locate_hmd

    rng = random.Random(seed + 2)
    files = locate_hmd(hmd_dir)
    annotations_dir = Path(annotations_dir)
    annotations_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, name in FINE_GRAINED_FILES.items():
        path = files.split_path(split)
        if not path.is_file():
            continue
        lines = []
        for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()):
            hateful = row["label"] == 1
            pc, attack = keyword_targets(row["text"]) if hateful else (["pc_empty"], ["attack_empty"])
            annotators = (lambda gold: [gold, gold, rng.sample(gold, 1)]) if hateful else (lambda gold: "None")
            lines.append({"img": row["img"], "text": row["text"], "set_name": split, "pc": annotators(pc),
                          "attack": annotators(attack), "gold_pc": pc, "gold_attack": attack, "id": row["id"],
                          "gold_hate": ["hateful" if hateful else "not_hateful"]})
        _write_lines(annotations_dir / name, lines)
        written[name] = len(lines)
    test = files.split_path("test_seen")
    if test.is_file():  # the phase-1 test set, unlabelled
        rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
        text = "\n".join(json.dumps({"id": r["id"], "img": r["img"], "text": r["text"]}).replace("/", "\\/")
                         for r in rows)
        (annotations_dir / "test.jsonl").write_text(text, encoding="utf-8")
        written["test.jsonl"] = len(rows)
    return written


def make_mmhs(
    out_dir,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    ocr_fraction: float = 0.75,
) -> dict[str, list[SyntheticMeme]]:
    """Write an MMHS150K-format folder; return the memes.

    Files: `MMHS150K_GT.json`, `img_resized/<id>.jpg`, `img_txt/<id>.json` for a fraction of the
    images (OCR found text only there), `splits/{train,val,test}_ids.txt`. The caption is the tweet text;
    the binary label is carried by the three annotator codes (hate iff at least 2 of 3 are > 0). Plus
    `SYNTHETIC_MARKER`.
    """
    out_dir = Path(out_dir)
    _mark_synthetic(out_dir, "mmhs", seed)
    memes = _generate(splits or MMHS_SPLITS, seed, start_id=1_000_000_000_000_000_000)
    (out_dir / "img_resized").mkdir(parents=True, exist_ok=True)
    (out_dir / "img_txt").mkdir(parents=True, exist_ok=True)
    (out_dir / "splits").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    ground_truth = {}
    for split, rows in memes.items():
        for meme in rows:
            _draw(meme, rng, image_size).save(out_dir / "img_resized" / f"{meme.id}.jpg", quality=92)
            hate_class = rng.randint(1, 5)
            votes = rng.choice([2, 3]) if meme.label else rng.choice([0, 1])
            labels = [hate_class] * votes + [0] * (3 - votes)
            rng.shuffle(labels)
            ground_truth[str(meme.id)] = {
                "img_url": f"http://pbs.twimg.com/tweet_video_thumb/{meme.id}.jpg",
                "labels": labels,
                "tweet_url": f"https://twitter.com/user/status/{meme.id}",
                "tweet_text": f"{meme.text} https://t.co/{meme.id % 99991:x}",
                "labels_str": [MMHS_CLASSES[c] for c in labels],
            }
            if rng.random() < ocr_fraction:
                (out_dir / "img_txt" / f"{meme.id}.json").write_text(json.dumps({"img_text": meme.text}))
        (out_dir / "splits" / f"{split}_ids.txt").write_text("".join(f"{m.id}\n" for m in rows))
    (out_dir / "MMHS150K_GT.json").write_text(json.dumps(ground_truth))
    return memes


def write_region_features(memes: dict[str, list[SyntheticMeme]], cache_dir, seed: int = 0, dim: int = 2048):
    """Write synthetic region features for generated memes into a feature cache at `cache_dir`.

    One region per drawn object (the box it was drawn in) plus a whole-image region; each feature is a
    fixed random prototype of the region's kind (`world.region_prototypes`) plus noise, so the image kind is
    recoverable from the regions as it would be from a real detector's features.
    """
    from hm_hf.extract.cache import FeatureCache, RegionFeatures

    rng = np.random.default_rng(seed)
    prototypes = region_prototypes(rng, dim)
    cache = FeatureCache.create(cache_dir, {"name": DETECTOR_NAME, "version": 2, "seed": seed, "dim": dim})
    have = cache.ids()
    for split, rows in memes.items():
        records = {}
        for meme in rows:
            if str(meme.id) in have:
                continue
            width, height = meme.image_size
            boxes = [b[:4] for b in meme.boxes] + [(0, 0, width - 1, height - 1)]
            kinds = [b[4] for b in meme.boxes] + [WHOLE_IMAGE]
            noise = rng.normal(0.0, FEATURE_NOISE_STD, size=(len(kinds), dim)).astype(np.float32)
            features = prototypes[kinds] + noise
            records[str(meme.id)] = RegionFeatures(
                features=np.maximum(features, 0.0),  # post-ReLU, like pooled detector features
                boxes=np.asarray(boxes, dtype=np.float32),
                image_width=width,
                image_height=height,
                object_ids=np.asarray(kinds),
                object_scores=np.ones(len(kinds), dtype=np.float32),
            )
        cache.write_shard(f"synthetic-{split}", records)
    return cache


def make_dataset(dataset: str, out_dir, scale: float = 1.0, seed: int = 0, layout: str = "official",
                 features_dir=None) -> dict[str, list[SyntheticMeme]]:
    """`make_hmd` / `make_mmhs` with every split's default size multiplied by `scale` (at least 2 rows),
    plus the region-feature cache in `features_dir` when given."""
    if not 0 < scale < float("inf"):
        raise SyntheticOutputError(f"scale must be a positive number (a share of the default sizes), got {scale}")
    if dataset == "hmd":
        splits = {k: max(2, int(v * scale)) for k, v in HMD_SPLITS.items()}
        memes = make_hmd(out_dir, splits=splits, seed=seed, layout=layout)
    elif dataset == "mmhs":
        splits = {k: max(2, int(v * scale)) for k, v in MMHS_SPLITS.items()}
        memes = make_mmhs(out_dir, splits=splits, seed=seed)
    else:
        raise ValueError(f"dataset {dataset!r} is not one of hmd, mmhs")
    if features_dir is not None:
        write_region_features(memes, features_dir, seed=seed)
    return memes


def summarize(memes: dict[str, list[SyntheticMeme]]) -> str:
    """A small table: rows, labelled-hateful share and confounder structure per split."""
    lines = [f"{'split':<12} {'rows':>5} {'hateful':>8} {'captions':>9}"]
    for split, rows in memes.items():
        hateful = sum(m.label for m in rows) / max(len(rows), 1)
        lines.append(f"{split:<12} {len(rows):>5} {hateful:>8.0%} {len({m.text for m in rows}):>9}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    """`hm-hf make-synthetic`: write a synthetic data set (and optionally its region-feature cache)."""
    import argparse

    parser = argparse.ArgumentParser(prog="hm-hf make-synthetic", description=cli.__doc__)
    parser.add_argument("--dataset", choices=["hmd", "mmhs"], default="hmd")
    parser.add_argument("--output", required=True, help="folder to write the data set into")
    parser.add_argument("--features", help="also write a synthetic region-feature cache into this folder")
    parser.add_argument("--layout", choices=["official", "mmf"], default="official", help="HMD only")
    parser.add_argument("--fine-grained", default=None, metavar="DIR",
                        help="HMD only: also write the fine-grained (WOAH 2021) annotation files into DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every split's default size")
    args = parser.parse_args(argv)
    if args.fine_grained and args.dataset != "hmd":
        parser.error("--fine-grained labels Hateful Memes: use it with --dataset hmd")
    try:
        memes = make_dataset(args.dataset, args.output, scale=args.scale, seed=args.seed, layout=args.layout,
                             features_dir=args.features)
    except SyntheticOutputError as err:
        print(f"hm-hf make-synthetic: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote a synthetic {args.dataset} data set to {args.output}")
    print(summarize(memes))
    if args.fine_grained:
        written = make_fine_grained(args.output, args.fine_grained, seed=args.seed)
        print(f"wrote the fine-grained annotations to {args.fine_grained}: "
              + ", ".join(f"{name} ({n} memes)" for name, n in written.items()))
    return 0
