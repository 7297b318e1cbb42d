"""RGCL and its retrieval index: exact search against a numpy brute force, the kNN vote, the loss, save /
load of model + index, adding labelled memes (the vote follows, `hm-hf index add` atomic and resumable,
bad input named), the training run on the tiny synthetic set, the pipeline's neighbours and the card."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, CLIPConfig

import hm_hf  # noqa: F401
from hm_hf.models.rgcl import HmRgclConfig, HmRgclForHatefulMemes, rgcl_contrastive_loss
from hm_hf.retrieval.index import INDEX_FILE, IndexError_, RetrievalIndex, knn_probability
from hub_cache import offline_hub_repo  # tests/hub_cache.py

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = CLIPConfig(
    text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                     max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
    vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=16, patch_size=8),
    projection_dim=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**overrides):
    torch.manual_seed(0)
    options = dict(clip_config=TINY_CLIP, projection_dim=8, pre_output_dim=12, num_pre_output_layers=2, knn_k=3)
    return HmRgclForHatefulMemes(HmRgclConfig(**{**options, **overrides}))


def _inputs(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"image_embeds": torch.randn(n, 16, generator=g), "text_embeds": torch.randn(n, 16, generator=g)}


def _indexed(model, inputs, labels, ids):
    model.eval()
    index = RetrievalIndex(model.config.embedding_dim)
    index.add(model.embed(**inputs), labels, ids, source="train")
    model.retrieval_index = index
    return index


# ----------------------------------------------------------------------------------------------- the index

def test_search_equals_numpy_brute_force():
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(200, 24)), rng.normal(size=(17, 24))
    ids = rng.permutation(10_000)[:200]
    index = RetrievalIndex(24)
    index.add(torch.tensor(vectors), rng.integers(0, 2, 200).tolist(), ids.tolist(), "train")
    own = torch.tensor(ids[:17])  # each query excludes one indexed id
    scores, rows = index.search(torch.tensor(queries), k=7, exclude_ids=own)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    sims[np.arange(17), np.arange(17)] = -np.inf  # the excluded ids are rows 0..16
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    assert (rows.numpy() == expected).all()
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(sims, expected, 1), rtol=1e-5, atol=1e-6)
    assert not (rows.numpy() == np.arange(17)[:, None]).any()


def test_search_mask_and_too_few_rows():
    index = RetrievalIndex(2)
    index.add(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), [0, 1, 0], [1, 2, 3], "a")
    mask = torch.tensor([[False, True, False]])
    scores, rows = index.search(torch.tensor([[1.0, 0.0]]), k=2, mask=mask)
    assert rows.tolist() == [[1, -1]] and torch.isinf(scores[0, 1])
    found = index.neighbours(torch.tensor([[1.0, 0.0]]), k=5)
    assert found["ids"].shape == (1, 3) and found["ids"][0, 0] == 1


def test_knn_vote_by_similarity_rank_and_mean():
    scores = torch.tensor([[0.9, 0.5, -0.2, 0.0]])
    labels = torch.tensor([[1, 0, 1, -1]])  # the last neighbour is missing
    w = (scores[0, :3] + 1) / 2
    assert knn_probability(scores, labels, "similarity").item() == pytest.approx(float((w[0] + w[2]) / w.sum()))
    assert knn_probability(scores, labels, "rank").item() == pytest.approx((4 + 2) / (4 + 3 + 2))
    assert knn_probability(scores, labels, "mean").item() == pytest.approx(2 / 3)
    assert knn_probability(torch.zeros(1, 2), torch.full((1, 2), -1)).item() == 0.5


def test_signed_votes_are_the_official_codes_score():
    """RGCL's code scores v = sum_k w_k (2 y_k - 1) s_k / sum_k w_k (w: K..1 for "arithmetic", 1 for "mean"),
    AUROC on v and "hateful" where v > 0; ours is (v + 1) / 2 (missing neighbours get no weight)."""
    scores = torch.tensor([[0.9, 0.5, -0.2, 0.0], [0.8, 0.7, 0.6, 0.1]])
    labels = torch.tensor([[1, 0, 1, -1], [0, 0, 1, 1]])
    rank = (4 * 0.9 - 3 * 0.5 + 2 * -0.2) / (4 + 3 + 2)
    rank2 = (-4 * 0.8 - 3 * 0.7 + 2 * 0.6 + 1 * 0.1) / (4 + 3 + 2 + 1)
    p = knn_probability(scores, labels, "signed_rank")
    torch.testing.assert_close(p, torch.tensor([(rank + 1) / 2, (rank2 + 1) / 2]))
    assert p[0] > 0.5 and p[1] < 0.5  # the code's decisions (v > 0: hateful)
    mean = (0.9 - 0.5 - 0.2) / 3
    assert knn_probability(scores, labels, "signed_mean")[0].item() == pytest.approx((mean + 1) / 2)
    # the share votes ignore how similar a neighbour is; the signed ones do not
    close, far = torch.tensor([[0.99, 0.1]]), torch.tensor([[0.2, 0.1]])
    two = torch.tensor([[1, 0]])
    assert knn_probability(close, two, "rank") == knn_probability(far, two, "rank")
    assert knn_probability(close, two, "signed_rank") > knn_probability(far, two, "signed_rank")
    assert knn_probability(torch.zeros(1, 2), torch.full((1, 2), -1), "signed_rank").item() == 0.5


def test_index_refuses_duplicates_and_bad_labels():
    index = RetrievalIndex(2)
    index.add(torch.ones(1, 2), [1], [5], "a")
    with pytest.raises(IndexError_, match="id 5 is already in the index"):
        index.add(torch.ones(1, 2), [0], [5], "b")
    with pytest.raises(IndexError_, match="id 7 is already"):
        index.add(torch.ones(2, 2), [0, 1], [7, 7], "b")
    with pytest.raises(IndexError_, match="label 2"):
        index.add(torch.ones(1, 2), [2], [8], "b")
    assert len(index) == 1


def test_save_is_atomic_and_damage_is_named(tmp_path, monkeypatch):
    index = RetrievalIndex(3)
    index.add(torch.randn(4, 3), [0, 1, 0, 1], [1, 2, 3, 4], "train")
    index.save(tmp_path)
    import hm_hf.retrieval.index as module

    def crash(*args, **kwargs):
        raise OSError("disk full")

    index.add(torch.randn(1, 3), [1], [9], "new")
    monkeypatch.setattr(module, "atomic_write_text", crash)
    with pytest.raises(OSError):
        index.save(tmp_path)  # the new vectors were written, the JSON (the commit point) was not
    monkeypatch.undo()
    old = RetrievalIndex.load(tmp_path)
    assert old.ids == [1, 2, 3, 4] and old.source_counts() == {"train": 4}
    meta = json.loads((tmp_path / INDEX_FILE).read_text())
    (tmp_path / meta["vectors_file"]).write_bytes(b"not safetensors")
    with pytest.raises(IndexError_, match=meta["vectors_file"]):
        RetrievalIndex.load(tmp_path)


def _tampered(folder, **changes):
    """Rewrite a saved index's JSON with `changes` (``vectors``: new vectors, their sha256 kept consistent),
    as a hand edit or another tool would: only the checks on the contents can catch it."""
    from safetensors.torch import save_file

    meta = json.loads((folder / INDEX_FILE).read_text())
    vectors = changes.pop("vectors", None)
    if vectors is not None:
        save_file({"vectors": vectors}, str(folder / meta["vectors_file"]))
        meta["vectors_sha256"] = hashlib.sha256(vectors.contiguous().numpy().tobytes()).hexdigest()
        meta["dim"] = vectors.shape[1]
    (folder / INDEX_FILE).write_text(json.dumps({**meta, **changes}))


@pytest.mark.parametrize("changes, says", [
    ({"labels": [0, 1, 2]}, "id 3: label 2 is not 0"),
    ({"labels": [0, 1, 0.7]}, "label 0.7 is not a whole number"),
    ({"ids": [1, 2, "abc"]}, "id 'abc' is not a whole number"),
    ({"ids": [1, 2, 2**70]}, f"id {2**70} does not fit in 64 bits"),
    ({"ids": [1, 2, 2]}, "id 2 is already in the index"),
    ({"source_of_row": [0, 0, -1]}, "source_of_row refers to a source that is not listed"),
    ({"vectors": torch.tensor([[1.0, 0, 0], [0, 1, 0], [float("nan"), 0, 0]])}, "NaN or infinite"),
])
def test_tampered_index_contents_are_refused_naming_the_file(tmp_path, changes, says):
    index = RetrievalIndex(3)
    index.add(torch.eye(3), [0, 1, 0], [1, 2, 3], "train")
    index.save(tmp_path)
    _tampered(tmp_path, **changes)
    with pytest.raises(IndexError_, match=f"{tmp_path / INDEX_FILE}: .*{re.escape(says)}"):
        RetrievalIndex.load(tmp_path)


def test_an_index_of_another_model_is_refused_and_a_save_repairs_its_vectors(tmp_path):
    model = _model()
    _indexed(model, _inputs(), [0, 1, 0, 1, 1, 0], list(range(10, 16)))
    model.save_pretrained(tmp_path / "m")
    _tampered(tmp_path / "m", vectors=torch.eye(6, 5))  # 5 dimensions: the model's embeddings have more
    with pytest.raises(IndexError_, match=f"its vectors have 5 dimensions, the model's embeddings "
                                          f"{model.config.embedding_dim}: the index belongs to another model"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    index = RetrievalIndex(3)
    index.add(torch.randn(4, 3), [0, 1, 0, 1], [1, 2, 3, 4], "train")
    index.save(tmp_path / "i")
    vectors_file = tmp_path / "i" / json.loads((tmp_path / "i" / INDEX_FILE).read_text())["vectors_file"]
    vectors_file.write_bytes(vectors_file.read_bytes()[:40])  # truncated under the same name
    index.save(tmp_path / "i")  # the same vectors from memory: the damaged file is written again
    assert torch.equal(RetrievalIndex.load(tmp_path / "i").vectors, index.vectors)


# ---------------------------------------------------------------------------------------------- the model

def test_contrastive_losses_pull_positive_and_push_hard_negative():
    model = _model()
    inputs, labels, ids = _inputs(), torch.tensor([0, 1, 0, 1, 1, 0]), torch.arange(100, 106)
    index = _indexed(model, inputs, labels.tolist(), ids.tolist())
    model.train()
    g = model.hm_rgcl(**inputs).pooler_output
    for kind in ("triplet", "infonce"):
        model.config.contrastive_loss = kind
        loss = rgcl_contrastive_loss(g, labels, index, model.config, ids)
        assert torch.isfinite(loss) and loss > 0
    # a batch whose embeddings *are* their pseudo-gold positives and far from their hard negatives: no loss
    memory = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    small = RetrievalIndex(2)
    small.add(memory, [0, 1], [1, 2], "t")
    config = HmRgclConfig(clip_config=TINY_CLIP, in_batch_negatives=False, contrastive_loss="triplet")
    assert rgcl_contrastive_loss(memory.clone(), torch.tensor([0, 1]), small, config, torch.tensor([7, 8])) == 0


def test_save_load_round_trip_same_logits_and_neighbours(tmp_path):
    model = _model(decision_rule="combined")
    inputs = _inputs()
    _indexed(model, inputs, [0, 1, 0, 1, 1, 0], list(range(10, 16)))
    queries = _inputs(4, seed=2)
    before = model(**queries, return_neighbours=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / INDEX_FILE).is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "HmRgclForHatefulMemes" and len(loaded.retrieval_index) == 6
    after = loaded(**queries, return_neighbours=True)
    torch.testing.assert_close(before.logits, after.logits)
    assert torch.equal(before.neighbour_ids, after.neighbour_ids)
    torch.testing.assert_close(before.neighbour_scores, after.neighbour_scores)
    assert loaded.describe(after, 0)["decision_rule"] == "combined"


def test_model_and_index_load_from_a_hub_repo(tmp_path, monkeypatch):
    """A Hub id resolves the index beside the weights (huggingface_hub's offline cache here: no network); a
    damaged index file in the repo is an error naming it."""
    model = _model(decision_rule="knn")
    _indexed(model, _inputs(), [0, 1, 0, 1, 1, 0], list(range(10, 16)))
    queries = _inputs(3, seed=4)
    before = model(**queries, return_neighbours=True)
    model.save_pretrained(tmp_path / "saved")
    snapshot = offline_hub_repo(tmp_path, monkeypatch, tmp_path / "saved", "org/rgcl-tiny",
                                absent=("adapter_config.json",))
    loaded = AutoModelForSequenceClassification.from_pretrained("org/rgcl-tiny").eval()
    assert loaded.retrieval_index.ids == list(range(10, 16)) and loaded.decision_rule() == "knn"
    after = loaded(**queries, return_neighbours=True)
    torch.testing.assert_close(before.logits, after.logits)
    assert torch.equal(before.neighbour_ids, after.neighbour_ids)
    (snapshot / INDEX_FILE).write_text('{"dim": 12, "vectors_file": ')
    with pytest.raises(IndexError_, match=f"{INDEX_FILE}: not a readable retrieval index"):
        AutoModelForSequenceClassification.from_pretrained("org/rgcl-tiny")


def test_decision_rules_and_added_twin_flips_the_vote():
    model = _model(decision_rule="knn", knn_k=1)
    inputs = _inputs()
    index = _indexed(model, inputs, [0, 0, 0, 0, 0, 0], list(range(6)))
    query = _inputs(1, seed=3)
    assert model(**query).logits.softmax(-1)[0, 1] < 0.01  # every neighbour benign
    index.add(model.embed(**query) + 1e-4, [1], [99], source="moderators")  # a near-duplicate, hateful
    out = model(**query, return_neighbours=True)
    assert out.neighbour_ids[0, 0] == 99 and out.logits.softmax(-1)[0, 1] > 0.99
    model.config.decision_rule = "head"
    torch.testing.assert_close(model(**query).logits, out.head_logits)
    model.config.decision_rule = "combined"
    p = model(**query).logits.softmax(-1)[0, 1]
    expected = 0.5 * out.head_logits.softmax(-1)[0, 1] + 0.5 * out.knn_probability[0]
    assert p.item() == pytest.approx(expected.item(), abs=1e-4)
    model.retrieval_index = None
    assert model.decision_rule() == "head"


def test_rgcl_is_binary():
    with pytest.raises(ValueError, match="binary"):
        _model(num_labels=3)
    with pytest.raises(ValueError, match="decision_rule"):
        HmRgclConfig(decision_rule="vote")


# ------------------------------------------------------------------------ training, `hm-hf index`, pipeline

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny synthetic recipe, trained once (in-process, the recipe's own settings and training-set size, its
    frozen tiny CLIP pre-trained here; smaller evaluation splits, no checkpoints). About two minutes on one CPU
    thread: the one slow test here."""
    from hm_hf.synthetic import make_hmd
    from hm_hf.training.run import main

    root = tmp_path_factory.mktemp("rgcl")
    make_hmd(root / "data", splits={"train": 480, "dev_seen": 60, "dev_unseen": 60, "test_seen": 8})
    out = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(ROOT / "recipes/synthetic/config_tiny_rgcl.yaml"), "--data_dir", str(root / "data"),
                     "--dataset_cache_dir", str(root / "cache"), "--vision_model_name_or_path", str(root / "tiny_clip"),
                     "--output_dir", str(out), "--save_strategy", "no", "--load_best_model_at_end", "false",
                     "--eval_strategy", "no"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, out


def test_training_learns_and_saves_its_index(trained):
    """The paper's setting: frozen (pre-trained) CLIP, only the MLP and head trained, the in-batch negatives on."""
    from hm_hf.synthetic.clip_pretraining import PRETRAINING_FILE, zero_shot_accuracy

    root, out = trained
    assert (root / "tiny_clip" / PRETRAINING_FILE).is_file()
    assert min(zero_shot_accuracy(root / "tiny_clip").values()) > 0.9  # it knows both concepts, apart
    config = json.loads((out / "config.json").read_text())
    assert config["freeze_clip"] and config["in_batch_negatives"] and config["contrastive_loss"] == "triplet"
    results = json.loads((out / "all_results.json").read_text())
    assert results["dev_unseen_auroc"] > 0.7, results["dev_unseen_auroc"]  # chance is 0.5 on confounder pairs
    meta = json.loads((out / INDEX_FILE).read_text())
    assert meta["size"] == 480 and meta["sources"] == {"train": 480}
    card = (out / "README.md").read_text()
    assert "## Retrieval index" in card and "480 labelled memes" in card and "`combined`" in card


def _hmd_lines(folder: Path, name: str, lines: list[dict]) -> Path:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_index_add_is_resumable_atomic_and_names_bad_input(trained, tmp_path, monkeypatch, capsys):
    import shutil

    from hm_hf.retrieval import cli

    root, out = trained
    model_dir = tmp_path / "model"
    shutil.copytree(out, model_dir)
    data = root / "data"
    dev = [json.loads(line) for line in (data / "dev_seen.jsonl").read_text().splitlines()][:6]
    new = [dict(row, id=row["id"] + 50_000) for row in dev]
    source = _hmd_lines(data, "added", new)

    calls = {"n": 0}
    save = RetrievalIndex.save

    def crash_on_second(self, folder):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after the first checkpoint
        return save(self, folder)

    monkeypatch.setattr(RetrievalIndex, "save", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        cli.add_to_index(model_dir, [str(source)], batch_size=2, save_every=2, progress=False)
    monkeypatch.undo()
    assert len(RetrievalIndex.load(model_dir)) == 480 + 2  # the first checkpoint, nothing half-written
    result = cli.add_to_index(model_dir, [str(source)], batch_size=2, progress=False)
    assert result["skipped_already_indexed"] == 2 and result["added"] == 4 and result["size"] == 486
    assert cli.cli(["add", str(model_dir), str(source)]) == 0  # nothing left to add
    assert json.loads((model_dir / INDEX_FILE).read_text())["sources"] == {"train": 480, "data/added": 6}

    duplicate = _hmd_lines(data, "duplicate", [dict(new[0], id=1), dict(new[1], id=1)])
    with pytest.raises(cli.IndexInputError, match=r"duplicate.jsonl line 2: id 1 appears twice"):
        cli.add_to_index(model_dir, [str(duplicate)], progress=False)
    unlabelled = _hmd_lines(data, "unlabelled", [{k: v for k, v in new[0].items() if k != "label"}])
    with pytest.raises(cli.IndexInputError, match=r"unlabelled.jsonl line 1 .*no label"):
        cli.add_to_index(model_dir, [str(unlabelled)], progress=False)
    broken = data / "broken.jsonl"
    broken.write_text(json.dumps(new[0]) + "\n{not json\n")
    with pytest.raises(cli.IndexInputError, match="broken.jsonl"):
        cli.add_to_index(model_dir, [str(broken)], progress=False)
    missing = _hmd_lines(data, "missing", [dict(new[0], id=777, img="img/nope.png")])
    with pytest.raises(cli.IndexInputError, match="missing.jsonl line 1"):
        cli.add_to_index(model_dir, [str(missing)], progress=False)
    fresh = _hmd_lines(data, "fresh", [dict(new[0], id=new[0]["id"] + 1000), dict(new[1], id=new[1]["id"] + 1000)])
    train_id = json.loads((data / "train.jsonl").read_text().splitlines()[0])["id"]
    renumbered = _hmd_lines(data, "renumbered", [dict(new[0], id=train_id)])
    with pytest.raises(cli.IndexInputError, match=f"renumbered.jsonl line 1: id {train_id} is already in the index, "
                                                  "from source 'train', not 'data/renumbered'"):
        cli.add_to_index(model_dir, [str(renumbered)], progress=False)  # another meme, not a resume: refused
    assert len(RetrievalIndex.load(model_dir)) == 486  # refused input added nothing
    monkeypatch.chdir(data.parent)  # a split file given relative to the working directory
    assert cli.add_to_index(model_dir, [f"{data.name}/{fresh.name}"], progress=False)["added"] == 2
    with pytest.raises(SystemExit):  # argparse's usage error (exit status 2), naming the option
        cli.cli(["add", str(model_dir), str(source), "--batch-size", "0"])
    assert "--batch-size: 0 is not a positive whole number" in capsys.readouterr().err
    assert cli.cli(["show", str(model_dir)]) == 0


def test_pipeline_reports_rule_and_neighbours(trained):
    from hm_hf.pipeline import HatefulMemePipeline

    root, out = trained
    row = json.loads((root / "data" / "dev_seen.jsonl").read_text().splitlines()[0])
    pipe = HatefulMemePipeline.from_pretrained(str(out))
    plain = pipe(str(root / "data" / row["img"]), texts=row["text"])
    assert plain["decision_rule"] == "combined" and "neighbours" not in plain
    result = pipe(str(root / "data" / row["img"]), texts=row["text"], return_neighbours=True)
    assert len(result["neighbours"]) == 5 and {"id", "label", "similarity"} <= set(result["neighbours"][0])
    sims = [n["similarity"] for n in result["neighbours"]]
    assert sims == sorted(sims, reverse=True) and 0 <= result["knn_probability"] <= 1
    assert result["probability"] == pytest.approx(plain["probability"])


def test_lora_on_clip_saves_the_index_beside_the_adapters(tmp_path):
    """RGCL with peft (LoRA on the CLIP encoders, the maps / MLP / head trained in full): peft saves only the
    adapters, so the run writes the index beside them; loading the adapters attaches it, the pipeline scores
    exactly as the run's own predictions did (its combined rule needs the index), and `hm-hf index add` /
    `show` work on the adapter folder."""
    import csv

    from safetensors import safe_open

    from hm_hf.pipeline import HatefulMemePipeline
    from hm_hf.retrieval import cli
    from hm_hf.synthetic import make_hmd
    from hm_hf.training.run import main

    make_hmd(tmp_path / "data", splits={"train": 48, "dev_seen": 12, "dev_unseen": 4})
    out = tmp_path / "run"
    assert main([str(ROOT / "recipes/synthetic/config_tiny_rgcl.yaml"), "--data_dir", str(tmp_path / "data"),
                 "--dataset_cache_dir", str(tmp_path / "cache"), "--vision_model_name_or_path",
                 str(tmp_path / "tiny_clip"), "--output_dir", str(out), "--save_strategy", "no",
                 "--load_best_model_at_end", "false", "--eval_strategy", "no", "--num_train_epochs", "2",
                 "--synthetic_clip_pretraining_pairs", "0", "--clip_embedding_cache", "false",
                 "--peft_method", "lora", "--config_overrides",
                 "freeze_clip=true,projection_dim=16,pre_output_dim=16,num_pre_output_layers=2,in_batch_negatives=false,"
                 "decision_rule=combined,knn_k=5"]) == 0
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert any("lora_A" in n and "q_proj" in n for n in names) and any("pre_output" in n for n in names)
    assert json.loads((out / INDEX_FILE).read_text())["sources"] == {"train": 48}
    assert not (out / "base_model" / INDEX_FILE).exists()

    pipe = HatefulMemePipeline.from_pretrained(str(out))
    with open(out / "predictions_dev_seen.csv", newline="") as f:
        predicted = {int(row["id"]): float(row["proba"]) for row in csv.DictReader(f)}
    rows = [json.loads(line) for line in (tmp_path / "data" / "dev_seen.jsonl").read_text().splitlines()]
    for row in rows[:4]:
        result = pipe(str(tmp_path / "data" / row["img"]), texts=row["text"], return_neighbours=True)
        assert result["decision_rule"] == "combined" and len(result["neighbours"]) == 5
        assert result["probability"] == pytest.approx(predicted[row["id"]], abs=1e-5)

    new = tmp_path / "data" / "added.jsonl"
    new.write_text("".join(json.dumps(dict(row, id=row["id"] + 90_000)) + "\n" for row in rows[:3]))
    assert cli.add_to_index(out, [str(new)], progress=False)["size"] == 51
    assert cli.show(out)["decision_rule"] == "combined"
    from hm_hf.inference.model_loading import load_trained_model
    from hm_hf.models.rgcl.modeling_rgcl import rgcl_model

    assert len(rgcl_model(load_trained_model(str(out))).retrieval_index) == 51


def test_search_benchmark_runs(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("retrieval_search", ROOT / "benchmarks/retrieval_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny"]) == 0
    assert "numpy/torch" in capsys.readouterr().out
