"""Does retrieval help on the synthetic confounder pairs? RGCL against its own no-retrieval ablation.

Question: on the synthetic Hateful-Memes-format set (labels an XOR of image and text; dev_unseen is all
confounder pairs: each caption once with each kind of image, opposite labels), does the RGCL model
(recipes/synthetic/config_tiny_rgcl.yaml: cross-entropy + retrieval-guided triplet loss, kNN + head)
beat its no-retrieval ablation (config_tiny_rgcl_no_retrieval.yaml: same model, cross-entropy only, head
only), and does adding labelled memes to the index help with no retraining?

Both recipes are the paper's frozen-CLIP setting (their tiny CLIP pre-trained on synthetic image / caption
pairs once, in the work folder). For each seed and training-set size, both are trained (in-process,
`hm_hf.training.run.main`) on the benchmark's own synthetic set (`BENCH_SPLITS`: 400 dev_unseen memes);
dev_unseen is then scored by every decision rule, first with the index over the training split as saved,
then after `hm-hf index add` (`hm_hf.retrieval.cli.add_to_index`) of the dev_unseen memes' *labelled
twins*: the same caption and the same kind of object, re-drawn (new position, size, background and
distractors; new ids), i.e. re-posts of the evaluation memes that a moderator labelled after training.
No model is retrained for that step. Prints AUROC mean +- std (ddof=1) over seeds per (size, model, rule,
index) and writes the runs to JSON.

    python benchmarks/rgcl_synthetic.py --seeds 5 --train-sizes 480 960  # CPU, ~1-2 min per training run
    python benchmarks/rgcl_synthetic.py --tiny                            # smoke test (1 seed, 2 epochs)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {"rgcl": "recipes/synthetic/config_tiny_rgcl.yaml",
           "no_retrieval": "recipes/synthetic/config_tiny_rgcl_no_retrieval.yaml"}
TWIN_ID_OFFSET = 100_000
#: the benchmark's own synthetic set: larger evaluation splits than the recipes' (dev_unseen: 200 confounder pairs)
BENCH_SPLITS = {"train": 960, "dev_seen": 200, "dev_unseen": 400, "test_seen": 8}
TINY_SPLITS = {"train": 64, "dev_seen": 8, "dev_unseen": 16, "test_seen": 2}  # --tiny
BENCH_DATA_SEED = 3


def write_twins(data_dir: Path, split: str, out_dir: Path, seed: int = 7) -> Path:
    """A Hateful-Memes-format folder holding a re-drawn labelled twin of every meme of `split`."""
    from hm_hf.synthetic.data import SyntheticMeme, _draw
    from hm_hf.synthetic.world import KEYWORDS

    rng = random.Random(seed)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for raw in (data_dir / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(raw)
        words = set(row["text"].split())
        text_kind = next(k for k, group in enumerate(KEYWORDS) if words & set(group))
        image_kind = int(row["label"]) ^ text_kind  # label = image_kind XOR text_kind
        twin = SyntheticMeme(row["id"] + TWIN_ID_OFFSET, row["text"], image_kind, text_kind)
        _draw(twin, rng, (320, 240)).save(out_dir / "img" / f"{twin.id:06d}.png")
        lines.append(json.dumps({"id": twin.id, "img": f"img/{twin.id:06d}.png", "label": twin.label,
                                 "text": twin.text}))
    path = out_dir / f"{split}_twins.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def score_split(model_dir: Path, data_dir: Path, split: str) -> dict[str, float]:
    """AUROC of the head, the kNN vote and their mean on a labelled split (the saved index as it is now)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from hm_hf.images import load_image
    from hm_hf.inference.model_loading import load_trained_model
    from hm_hf.processing import MemeProcessor
    from hm_hf.models.rgcl.modeling_rgcl import rgcl_model

    model = rgcl_model(load_trained_model(str(model_dir))).eval()
    processor = MemeProcessor.from_pretrained(str(model_dir), model.config)
    rows = [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]
    head, knn, labels = [], [], []
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        batch = processor([{processor.text_column: r["text"], processor.image_column: load_image(data_dir / r["img"])}
                           for r in chunk])
        with torch.no_grad():
            out = model(**batch, meme_ids=torch.tensor([r["id"] for r in chunk]), return_neighbours=True)
        head += out.head_logits.float().softmax(-1)[:, 1].tolist()
        knn += out.knn_probability.tolist()
        labels += [r["label"] for r in chunk]
    w = model.config.combine_weight
    combined = [(1 - w) * h + w * k for h, k in zip(head, knn)]
    return {"head": roc_auc_score(labels, head), "knn": roc_auc_score(labels, knn),
            "combined": roc_auc_score(labels, combined)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[480, 960])
    parser.add_argument("--data-dir", default=None,
                        help="a Hateful-Memes-format folder (default: a synthetic one written to the work folder: "
                             f"{BENCH_SPLITS})")
    parser.add_argument("--split", default="dev_unseen")
    parser.add_argument("--work-dir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="1 seed, 2 epochs: only that it runs")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "rgcl_synthetic" / "cpu.json"))
    args = parser.parse_args(argv)

    from hm_hf.retrieval.cli import add_to_index
    from hm_hf.training import run

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rgcl_bench_"))
    mode = "tiny" if args.tiny else "full"  # a reused --work-dir keeps each mode's data and CLIP apart
    if args.data_dir:
        data_dir = Path(args.data_dir)
        if not (data_dir / f"{args.split}.jsonl").is_file():
            parser.error(f"--data-dir {data_dir}: no {args.split}.jsonl (a Hateful-Memes-format folder, official "
                         "layout); leave --data-dir out for the benchmark's own synthetic set")
    else:
        data_dir = work / f"data-{mode}"
        if not (data_dir / "train.jsonl").is_file():
            from hm_hf.synthetic import make_hmd

            make_hmd(data_dir, splits=TINY_SPLITS if args.tiny else BENCH_SPLITS, seed=BENCH_DATA_SEED)
    shared = ["--data_dir", str(data_dir), "--vision_model_name_or_path", str(work / f"tiny_clip_pretrained-{mode}"),
              "--dataset_cache_dir", str(work / "datasets_cache")]
    seeds = [12345 + i for i in range(1 if args.tiny else args.seeds)]
    extra = ["--num_train_epochs", "2", "--synthetic_clip_pretraining_pairs", "64"] if args.tiny else []
    records = []
    twins = None
    for size in args.train_sizes:
        for seed in seeds:
            for name, recipe in RECIPES.items():
                out = work / f"{name}-{mode}-n{size}-s{seed}"
                if not (out / "all_results.json").is_file():
                    run.main([str(ROOT / recipe), "--output_dir", str(out), "--seed", str(seed), *shared,
                              "--max_train_samples", str(size), "--save_total_limit", "1", *extra])
                if twins is None:
                    twins = write_twins(data_dir, args.split, work / f"twins-{mode}")
                scores = {"train_index": score_split(out, data_dir, args.split)}
                with_twins = work / f"{out.name}-twins"
                shutil.rmtree(with_twins, ignore_errors=True)
                shutil.copytree(out, with_twins, ignore=shutil.ignore_patterns("checkpoint-*"))
                add_to_index(with_twins, [str(twins)], source="twins", progress=False)
                scores["train_plus_twins_index"] = score_split(with_twins, data_dir, args.split)
                records.append({"model": name, "train_size": size, "seed": seed, "auroc": scores})
                print(json.dumps(records[-1]), flush=True)

    print(f"\n{args.split} AUROC, mean +- std over {len(seeds)} seeds")
    print(f"{'train':>6} {'model':<13} {'index':<23} {'head':>14} {'knn':>14} {'combined':>14}")
    summary = []
    for size in args.train_sizes:
        for name in RECIPES:
            for index in ("train_index", "train_plus_twins_index"):
                cells = {}
                for rule in ("head", "knn", "combined"):
                    values = [r["auroc"][index][rule] for r in records if r["model"] == name and r["train_size"] == size]
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    cells[rule] = (statistics.mean(values), std)
                summary.append({"train_size": size, "model": name, "index": index,
                                **{rule: {"mean": m, "std": s} for rule, (m, s) in cells.items()}})
                print(f"{size:>6} {name:<13} {index:<23} " +
                      " ".join(f"{m:>7.3f}+-{s:.3f}" for m, s in cells.values()))
    if not args.tiny:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"split": args.split, "seeds": seeds, "runs": records,
                                                 "summary": summary}, indent=1) + "\n")
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
