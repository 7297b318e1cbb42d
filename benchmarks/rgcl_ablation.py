"""Does RGCL beat its own no-retrieval ablation? On the synthetic confounder pairs, or on Hateful Memes.

`--recipes synthetic` (the default; CPU): on the benchmark's own synthetic Hateful-Memes-format set (labels
an XOR of image and text; dev_unseen is all confounder pairs: each caption once with each kind of image,
opposite labels), does the RGCL model (recipes/synthetic/config_tiny_rgcl.yaml: cross-entropy +
retrieval-guided triplet loss, kNN + head) beat its no-retrieval ablation (config_tiny_rgcl_no_retrieval.yaml:
same model, cross-entropy only, head only), and does adding labelled memes to the index help with no
retraining? Both recipes are the paper's frozen-CLIP setting (their tiny CLIP pre-trained on synthetic image /
caption pairs once, in the work folder). For each seed and training-set size, both are trained (in-process,
`hm_hf.training.run.main`) on `BENCH_SPLITS` (400 dev_unseen memes); dev_unseen is then scored by every
decision rule, first with the index over the training split as saved, then after `hm-hf index add`
(`hm_hf.retrieval.cli.add_to_index`) of the dev_unseen memes' *labelled twins*: the same caption and the same
kind of object, re-drawn (new position, size, background and distractors; new ids), i.e. re-posts of the
evaluation memes that a moderator labelled after training. No model is retrained for that step. Last,
*reference heads* (`reference_heads`): what heads trained on far more memes reach on the same frozen CLIP
vectors, i.e. how much room the features leave above the recipes' heads.

`--recipes hmd` (a GPU, the real data, a local copy of the CLIP checkpoint without Hub access): the same
comparison with the paper's settings, recipes/rgcl/frozen/config_hmd.yaml against
config_hmd_no_retrieval.yaml, on the whole training split (or `--train-sizes`), scored on test_seen.

The RGCL run keeps its best epoch by its head's AUROC (`--select-by head`, the default), as the ablation does,
so the two heads are compared at epochs chosen alike; `--select-by recipe` keeps the recipe's choice (the
`combined` rule's AUROC, which earlier results used). Prints AUROC mean +- std (ddof=1) over seeds per (size,
model, rule, index) and writes the runs to JSON.

    python benchmarks/rgcl_ablation.py          # 5 seeds x 120 / 240 / 480 / 960 memes; CPU, ~1 min per training run
    python benchmarks/rgcl_ablation.py --tiny                                   # smoke test (1 seed, 2 epochs)
    python benchmarks/rgcl_ablation.py --train-singles 0.95 --train-sizes 240 480 960   # few confounders in training
    python benchmarks/rgcl_ablation.py --recipes hmd --data-dir data/hateful_memes \
        --vision-model <local openai/clip-vit-large-patch14-336> --seeds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: recipe set -> {model name: recipe}; the first is RGCL, the second its no-retrieval ablation
RECIPES = {
    "synthetic": {"rgcl": "recipes/synthetic/config_tiny_rgcl.yaml",
                  "no_retrieval": "recipes/synthetic/config_tiny_rgcl_no_retrieval.yaml"},
    "hmd": {"rgcl": "recipes/rgcl/frozen/config_hmd.yaml",
            "no_retrieval": "recipes/rgcl/frozen/config_hmd_no_retrieval.yaml"},
}
DEFAULT_SPLIT = {"synthetic": "dev_unseen", "hmd": "test_seen"}
TWIN_ID_OFFSET = 100_000
#: the benchmark's own synthetic set: larger evaluation splits than the recipes' (dev_unseen: 200 confounder pairs)
BENCH_SPLITS = {"train": 960, "dev_seen": 200, "dev_unseen": 400, "test_seen": 8}
TINY_SPLITS = {"train": 64, "dev_seen": 8, "dev_unseen": 16, "test_seen": 2}  # --tiny
BENCH_DATA_SEED = 3


def hidden_kinds(row: dict) -> tuple[int, int]:
    """(image kind, text kind) of a labelled synthetic meme: the caption's keyword names the text kind, and the
    label is their XOR."""
    from hm_hf.synthetic.world import KEYWORDS

    words = set(row["text"].split())
    text_kind = next(k for k, group in enumerate(KEYWORDS) if words & set(group))
    return int(row["label"]) ^ text_kind, text_kind


def write_twins(data_dir: Path, split: str, out_dir: Path, seed: int = 7) -> Path:
    """A Hateful-Memes-format folder holding a re-drawn labelled twin of every meme of `split`."""
    from hm_hf.synthetic.data import SyntheticMeme, _draw

    rng = random.Random(seed)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for raw in (data_dir / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(raw)
        image_kind, text_kind = hidden_kinds(row)
        twin = SyntheticMeme(row["id"] + TWIN_ID_OFFSET, row["text"], image_kind, text_kind)
        _draw(twin, rng, (320, 240)).save(out_dir / "img" / f"{twin.id:06d}.png")
        lines.append(json.dumps({"id": twin.id, "img": f"img/{twin.id:06d}.png", "label": twin.label,
                                 "text": twin.text}))
    path = out_dir / f"{split}_twins.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_code_tag(*settings) -> str:
    """A tag of `settings` and of hm_hf.synthetic's code, naming the folders the benchmark writes with it (the data,
    the pre-trained tiny CLIP): a reused --work-dir then never serves a folder that an earlier version of the
    generator, or other settings, wrote."""
    import hm_hf.synthetic

    code = sorted((p.name, p.read_bytes()) for p in Path(hm_hf.synthetic.__file__).parent.glob("*.py"))
    digest = hashlib.sha256(json.dumps(settings).encode())
    for name, data in code:
        digest.update(name.encode() + data)
    return digest.hexdigest()[:8]


def score_split(model_dir: Path, data_dir: Path, split: str) -> dict[str, float]:
    """AUROC of the head, the kNN vote and their mean on a labelled split (the saved index as it is now)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from hm_hf.images import load_image
    from hm_hf.inference.model_loading import load_trained_model
    from hm_hf.processing import MemeProcessor
    from hm_hf.models.rgcl.modeling_rgcl import rgcl_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = rgcl_model(load_trained_model(str(model_dir))).eval().to(device)
    processor = MemeProcessor.from_pretrained(str(model_dir), model.config)
    rows = [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]
    head, knn, labels = [], [], []
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        batch = processor([{processor.text_column: r["text"], processor.image_column: load_image(data_dir / r["img"])}
                           for r in chunk])
        batch = {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}
        with torch.no_grad():
            out = model(**batch, meme_ids=torch.tensor([r["id"] for r in chunk], device=device), return_neighbours=True)
        head += out.head_logits.float().softmax(-1)[:, 1].tolist()
        knn += out.knn_probability.tolist()
        labels += [r["label"] for r in chunk]
    w = model.config.combine_weight
    combined = [(1 - w) * h + w * k for h, k in zip(head, knn)]
    return {"head": roc_auc_score(labels, head), "knn": roc_auc_score(labels, knn),
            "combined": roc_auc_score(labels, combined)}


def clip_vectors(clip_dir: Path, data_dir: Path, split: str) -> tuple:
    """The frozen CLIP's pooled image and text vectors of a split's memes (what the recipes' maps read), with
    each meme's hidden (image kind, text kind) and label."""
    import numpy as np
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from hm_hf.images import load_image

    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    rows = [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]
    images, texts = [], []
    for start in range(0, len(rows), 128):
        chunk = rows[start:start + 128]
        batch = processor(text=[r["text"] for r in chunk], images=[load_image(data_dir / r["img"]) for r in chunk],
                          return_tensors="pt", padding=True, truncation=True, max_length=77)
        with torch.no_grad():
            images.append(model.vision_model(pixel_values=batch["pixel_values"]).pooler_output)
            texts.append(model.text_model(input_ids=batch["input_ids"],
                                          attention_mask=batch["attention_mask"]).pooler_output)
    kinds = np.array([hidden_kinds(r) for r in rows])
    return (torch.cat(images).numpy(), torch.cat(texts).numpy(), kinds[:, 0], kinds[:, 1],
            np.array([r["label"] for r in rows]), [r["text"] for r in rows])


def reference_heads(clip_dir: Path, data_dir: Path, split: str, probe_dir: Path, size: int) -> dict:
    """How much room do these frozen vectors leave above the recipes' heads? Heads trained on `size` fresh memes
    (the benchmark's generator and vocabulary, no caption of `split`), scored on `split`: a logistic regression
    per hidden factor (image kind from the image vector, text kind from the text vector), the XOR of their
    probabilities as a meme's score, and an MLP on both vectors trained on the label itself. Their AUROCs are
    reached, so the best head on these vectors does at least as well (a floor under the ceiling, not a bound)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier

    if not (probe_dir / "train.jsonl").is_file():
        from hm_hf.synthetic import make_hmd

        make_hmd(probe_dir, splits={"train": size}, seed=BENCH_DATA_SEED)
    *train, train_texts = clip_vectors(clip_dir, probe_dir, "train")
    *evaluation, eval_texts = clip_vectors(clip_dir, data_dir, split)
    keep = np.array([text not in set(eval_texts) for text in train_texts])  # no caption seen at evaluation
    image, text, image_kind, text_kind, label = (part[keep] for part in train)
    e_image, e_text, e_image_kind, e_text_kind, e_label = evaluation
    image_p = LogisticRegression(max_iter=5000).fit(image, image_kind).predict_proba(e_image)[:, 1]
    text_p = LogisticRegression(max_iter=5000).fit(text, text_kind).predict_proba(e_text)[:, 1]
    mlp = MLPClassifier(hidden_layer_sizes=(256, 64), alpha=1e-3, max_iter=2000, random_state=0)
    mlp_p = mlp.fit(np.hstack([image, text]), label).predict_proba(np.hstack([e_image, e_text]))[:, 1]
    return {"probe_memes": int(keep.sum()),
            "image_kind_accuracy": float(((image_p > 0.5) == e_image_kind).mean()),
            "text_kind_accuracy": float(((text_p > 0.5) == e_text_kind).mean()),
            "xor_of_probes_auroc": roc_auc_score(e_label, image_p * (1 - text_p) + (1 - image_p) * text_p),
            "mlp_auroc": roc_auc_score(e_label, mlp_p)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", choices=sorted(RECIPES), default="synthetic")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=None,
                        help="training memes per run (0: the whole split; default: 120 240 480 960 synthetic, 0 hmd)")
    parser.add_argument("--data-dir", default=None,
                        help="a Hateful-Memes-format folder (--recipes hmd: required; synthetic: default a folder "
                             f"written to the work folder: {BENCH_SPLITS})")
    parser.add_argument("--vision-model", default=None,
                        help="--recipes hmd: a local copy of the recipe's CLIP checkpoint (the Hub cannot be reached)")
    parser.add_argument("--split", default=None, help="the labelled split scored (default: " +
                        ", ".join(f"{k} {v}" for k, v in DEFAULT_SPLIT.items()) + ")")
    parser.add_argument("--recipe-args", default="", help="more recipe overrides for every run, e.g. '--fp16 false'")
    parser.add_argument("--work-dir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--train-singles", type=float, default=None,
                        help="synthetic: share of the training memes outside confounder pairs (default: "
                             "hm_hf.synthetic.data.TRAIN_SINGLES); raise it to make confounders rare in training")
    parser.add_argument("--reference-memes", type=int, default=6000,
                        help="synthetic: fresh memes the reference heads train on (0: skip)")
    parser.add_argument("--select-by", choices=["head", "recipe"], default="head",
                        help="the RGCL run's best epoch: by its head's AUROC (default: as the ablation's, so the two "
                             "heads compare fairly) or by the recipe's decision_rule (combined)")
    parser.add_argument("--tiny", action="store_true", help="synthetic: 1 seed, 2 epochs: only that it runs")
    parser.add_argument("--output", default=None,
                        help="JSON of the runs (default: benchmarks/results/rgcl_ablation/<recipes>[_singles<x>].json)")
    args = parser.parse_args(argv)

    from hm_hf.retrieval.cli import add_to_index
    from hm_hf.synthetic import is_synthetic
    from hm_hf.training import run

    synthetic = args.recipes == "synthetic"
    split = args.split or DEFAULT_SPLIT[args.recipes]
    sizes = args.train_sizes or ([120, 240, 480, 960] if synthetic else [0])
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rgcl_bench_"))
    mode = "tiny" if args.tiny else "full"  # a reused --work-dir keeps each mode's data and CLIP apart
    if args.tiny and not synthetic:
        parser.error("--tiny is the synthetic smoke test")
    if args.train_singles is not None:
        if not synthetic or args.data_dir:
            parser.error("--train-singles shapes the synthetic set the benchmark writes: not with --data-dir or "
                         "--recipes hmd")
        if not 0 <= args.train_singles <= 1:
            parser.error(f"--train-singles {args.train_singles}: a share, between 0 and 1")
    singles_tag = "" if args.train_singles is None else f"-singles{args.train_singles:g}"  # data folder, results file
    if args.data_dir:
        data_dir = Path(args.data_dir)
        annotations = data_dir / f"{split}.jsonl"
        if not annotations.is_file():
            parser.error(f"--data-dir {data_dir}: no {split}.jsonl (a Hateful-Memes-format folder, official layout)")
        if '"label"' not in annotations.read_text(encoding="utf-8").partition("\n")[0]:
            parser.error(f"{annotations}: its first line has no label; score a labelled split (--split)")
        if synthetic and not is_synthetic(data_dir):
            parser.error(f"--data-dir {data_dir} is not a synthetic folder (the twins and the reference heads read the "
                         "synthetic world's hidden factors): use --recipes hmd for real data")
    elif synthetic:
        from hm_hf.synthetic.data import TRAIN_SINGLES, make_hmd

        splits = TINY_SPLITS if args.tiny else BENCH_SPLITS
        singles = TRAIN_SINGLES if args.train_singles is None else args.train_singles
        data_dir = work / f"data-{mode}{singles_tag}-{synthetic_code_tag(splits, BENCH_DATA_SEED, singles)}"
        if not (data_dir / "train.jsonl").is_file():
            make_hmd(data_dir, splits=splits, seed=BENCH_DATA_SEED, train_singles=singles)
    else:
        parser.error("--recipes hmd needs --data-dir: the Hateful Memes folder as distributed")
    shared = ["--data_dir", str(data_dir), "--dataset_cache_dir", str(work / "datasets_cache")]
    clip_dir = work / f"tiny_clip_pretrained-{mode}-{synthetic_code_tag()}" if synthetic else args.vision_model
    if clip_dir:
        shared += ["--vision_model_name_or_path", str(clip_dir)]
    if args.tiny:
        shared += ["--num_train_epochs", "2", "--synthetic_clip_pretraining_pairs", "64"]
    shared += shlex.split(args.recipe_args)
    seeds = [12345 + i for i in range(1 if args.tiny else args.seeds)]
    indexes = ("train_index", "train_plus_twins_index") if synthetic else ("train_index",)
    # a reused --work-dir keeps a run only for the same inputs (another CLIP, data folder or overrides: new runs)
    inputs_tag = hashlib.sha256(json.dumps([str(data_dir), str(clip_dir), args.recipe_args]).encode()).hexdigest()[:8]
    selection = {name: [] for name in RECIPES[args.recipes]}
    if args.select_by == "head":  # the best epoch by the head's AUROC (Trainer scores the decision_rule's logits)
        import yaml

        overrides = yaml.safe_load((ROOT / RECIPES[args.recipes]["rgcl"]).read_text())["config_overrides"]
        selection["rgcl"] = ["--config_overrides", f"{overrides},decision_rule=head"]  # the later setting wins
    records = []
    twins = None
    for size in sizes:
        for seed in seeds:
            for name, recipe in RECIPES[args.recipes].items():
                selected = "" if name != "rgcl" else f"-by{args.select_by}"
                out = work / f"{name}{selected}-{args.recipes}-{mode}-{inputs_tag}-n{size}-s{seed}"
                if not (out / "all_results.json").is_file():
                    limit = ["--max_train_samples", str(size)] if size else []
                    run.main([str(ROOT / recipe), "--output_dir", str(out), "--seed", str(seed), *shared, *limit,
                              "--save_total_limit", "1", *selection[name]])
                scores = {"train_index": score_split(out, data_dir, split)}
                if synthetic:
                    if twins is None:
                        twins = write_twins(data_dir, split, work / f"twins-{mode}")
                    with_twins = work / f"{out.name}-twins"
                    shutil.rmtree(with_twins, ignore_errors=True)
                    shutil.copytree(out, with_twins, ignore=shutil.ignore_patterns("checkpoint-*"))
                    add_to_index(with_twins, [str(twins)], source="twins", progress=False)
                    scores["train_plus_twins_index"] = score_split(with_twins, data_dir, split)
                records.append({"model": name, "train_size": size, "seed": seed, "auroc": scores})
                print(json.dumps(records[-1]), flush=True)

    print(f"\n{split} AUROC, mean +- std over {len(seeds)} seeds (train 0: the whole split)")
    print(f"{'train':>6} {'model':<13} {'index':<23} {'head':>14} {'knn':>14} {'combined':>14}")
    summary = []
    for size in sizes:
        for name in RECIPES[args.recipes]:
            for index in indexes:
                cells = {}
                for rule in ("head", "knn", "combined"):
                    values = [r["auroc"][index][rule] for r in records
                              if r["model"] == name and r["train_size"] == size]
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    cells[rule] = (statistics.mean(values), std)
                summary.append({"train_size": size, "model": name, "index": index,
                                **{rule: {"mean": m, "std": s} for rule, (m, s) in cells.items()}})
                print(f"{size:>6} {name:<13} {index:<23} " +
                      " ".join(f"{m:>7.3f}+-{s:.3f}" for m, s in cells.values()))
    reference = None
    if synthetic and args.reference_memes:
        probes = work / f"reference-{mode}-{args.reference_memes}-{synthetic_code_tag()}"
        reference = reference_heads(clip_dir, data_dir, split, probes, 64 if args.tiny else args.reference_memes)
        print(f"\nreference heads on the frozen CLIP vectors, {split} (trained on {reference['probe_memes']} "
              f"fresh memes): image kind accuracy {reference['image_kind_accuracy']:.3f}, text kind accuracy "
              f"{reference['text_kind_accuracy']:.3f}; AUROC of their XOR {reference['xor_of_probes_auroc']:.3f}, "
              f"of an MLP on both vectors {reference['mlp_auroc']:.3f}")
    if not args.tiny:
        name = f"{args.recipes}{singles_tag.replace('-', '_')}.json"
        output = Path(args.output or ROOT / "benchmarks" / "results" / "rgcl_ablation" / name)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"recipes": args.recipes, "split": split, "seeds": seeds,
                                      "train_singles": args.train_singles, "rgcl_best_epoch_by": args.select_by,
                                      "runs": records,
                                      "summary": summary, "reference_heads": reference}, indent=1) + "\n")
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
