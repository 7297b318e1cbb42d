"""fastText text embeddings: reading the official files, training, reloading, the datasets.map step, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("fasttext", reason="needs the hm_hf[fasttext] extra (fasttext-numpy2)")
datasets = pytest.importorskip("datasets")

from hm_hf.synthetic import make_hmd, make_mmhs  # noqa: E402
from hm_hf.text import fasttext_embeddings as fte  # noqa: E402

DIM = 24
FAST = {"epoch": 5, "dim": DIM, "bucket": 20_000, "thread": 1}  # small and deterministic (one thread)


@pytest.fixture(scope="module")
def hmd(tmp_path_factory):
    root = tmp_path_factory.mktemp("hmd")
    memes = make_hmd(root, splits={"train": 120, "dev_seen": 20}, image_size=(32, 24))
    return root, memes


@pytest.fixture(scope="module")
def mmhs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmhs")
    memes = make_mmhs(root, splits={"train": 40, "val": 10, "test": 10}, image_size=(32, 24))
    return root, memes


@pytest.fixture(scope="module")
def model_path(hmd, tmp_path_factory):
    root, _ = hmd
    texts = fte.read_split_texts("hmd", root, "train")
    return fte.train_fasttext(texts, tmp_path_factory.mktemp("model") / "ft.bin", **FAST)


def _dataset_on_disk(rows, path):
    """A dataset backed by Arrow files, so map results are cached next to them."""
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


def test_read_hmd_texts_both_layouts(hmd, tmp_path):
    root, memes = hmd
    assert fte.read_split_texts("hmd", root, "train") == [m.text for m in memes["train"]]
    mmf = make_hmd(tmp_path, splits={"train": 6}, image_size=(32, 24), layout="mmf")
    assert fte.read_split_texts("hmd", tmp_path, "train") == [m.text for m in mmf["train"]]


def test_read_mmhs_texts_with_and_without_ocr(mmhs):
    root, memes = mmhs
    ground_truth = json.loads((root / "MMHS150K_GT.json").read_text())
    with_ocr = fte.read_split_texts("mmhs", root, "val")
    without = fte.read_split_texts("mmhs", root, "val", include_img_text=False)
    assert without == [ground_truth[str(m.id)]["tweet_text"] for m in memes["val"]]
    for meme, text, tweet in zip(memes["val"], with_ocr, without):
        has_ocr = (root / "img_txt" / f"{meme.id}.json").is_file()
        assert text == (f"{tweet} {meme.text}" if has_ocr else tweet)


def test_clean_text_removes_newlines():
    assert fte.clean_text("  Hello\nthere\r\n\tfriend  ") == "Hello there friend"
    assert fte.clean_text("A\u2028B", lowercase=True) == "a b"
    assert fte.clean_text(None) == ""


def test_vectors_dimension_reload_and_determinism(hmd, model_path, tmp_path):
    root, memes = hmd
    texts = [m.text for m in memes["dev_seen"]]
    first = fte.sentence_vectors(fte.load_fasttext(model_path), texts)
    assert first.shape == (len(texts), DIM) and first.dtype == np.float32
    assert np.isfinite(first).all() and first.std(axis=0).mean() > 0  # not one constant vector
    again = fte.sentence_vectors(fte.load_fasttext(model_path), texts)
    np.testing.assert_array_equal(first, again)
    # single-threaded training is deterministic: retraining gives the same vectors
    retrained = fte.train_fasttext(fte.read_split_texts("hmd", root, "train"), tmp_path / "again.bin", **FAST)
    np.testing.assert_array_equal(first, fte.sentence_vectors(fte.load_fasttext(retrained), texts))
    # the atomic save leaves only the model and its JSON record behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.bin", "again.bin.json"]
    record = json.loads((tmp_path / "again.bin.json").read_text())
    assert record["dim"] == DIM and record["model"] == "skipgram" and record["min_count"] == 1


def test_newlines_do_not_break_embedding(model_path):
    model = fte.load_fasttext(model_path)
    with pytest.raises(ValueError):  # why clean_text exists: fastText itself rejects newlines
        model.get_sentence_vector("two\nlines")
    vectors = fte.sentence_vectors(model, ["two\nlines", "two lines", None])
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert vectors.shape == (3, DIM)


def test_map_adds_column_and_is_cached(hmd, model_path, tmp_path, monkeypatch):
    root, memes = hmd
    rows = [{"id": m.id, "text": m.text, "label": m.label} for m in memes["dev_seen"]]
    ds = _dataset_on_disk(rows, tmp_path / "ds")
    out = fte.add_text_embeddings(ds, model_path)
    assert out.features["text_embedding"] == datasets.List(datasets.Value("float32"), length=DIM)
    column = np.asarray(out.with_format("numpy")["text_embedding"])
    expected = fte.sentence_vectors(fte.load_fasttext(model_path), [r["text"] for r in rows])
    np.testing.assert_array_equal(column, expected)
    assert out.cache_files and out.cache_files[0]["filename"].startswith(str(tmp_path / "ds"))

    calls = []
    original = fte.sentence_vectors
    monkeypatch.setattr(fte, "sentence_vectors", lambda *a, **k: calls.append(1) or original(*a, **k))
    cached = fte.add_text_embeddings(ds, model_path)
    assert calls == []  # loaded from the cache file, nothing recomputed
    assert cached._fingerprint == out._fingerprint and cached.cache_files == out.cache_files
    # another model file at another path -> another fingerprint, recomputed
    other = fte.train_fasttext([r["text"] for r in rows] * 3, tmp_path / "other.bin", **{**FAST, "epoch": 2})
    recomputed = fte.add_text_embeddings(ds, other)
    assert calls and recomputed._fingerprint != out._fingerprint


def test_map_several_text_columns_and_datasetdict(mmhs, model_path):
    root, memes = mmhs
    rows = [{"tweet_text": "tweet one", "img_text": "ocr words"}, {"tweet_text": "tweet two", "img_text": ""}]
    dd = datasets.DatasetDict(train=datasets.Dataset.from_list(rows))
    out = fte.add_text_embeddings(dd, model_path, text_column=["tweet_text", "img_text"], column="emb")
    got = np.asarray(out["train"].with_format("numpy")["emb"])
    expected = fte.sentence_vectors(fte.load_fasttext(model_path), ["tweet one ocr words", "tweet two"])
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(KeyError, match="nope"):
        fte.add_text_embeddings(dd["train"], model_path, text_column="nope")


def test_lowercase_is_recorded_and_applied(hmd, tmp_path):
    root, _ = hmd
    texts = fte.read_split_texts("hmd", root, "train")
    path = fte.train_fasttext(texts, tmp_path / "lower.bin", lowercase=True, **FAST)
    assert json.loads((tmp_path / "lower.bin.json").read_text())["lowercase"] is True
    ds = datasets.Dataset.from_list([{"text": "FARMERS Garden"}])
    got = np.asarray(fte.add_text_embeddings(ds, path).with_format("numpy")["text_embedding"])[0]
    model = fte.load_fasttext(path)
    np.testing.assert_array_equal(got, model.get_sentence_vector("farmers garden"))
    assert not np.array_equal(got, model.get_sentence_vector("FARMERS Garden"))


def test_clear_errors(hmd, tmp_path):
    root, _ = hmd
    with pytest.raises(FileNotFoundError, match=r"no_such_split\.jsonl"):
        fte.read_split_texts("hmd", root, "no_such_split")
    with pytest.raises(FileNotFoundError, match="MMHS150K_GT.json|train_ids.txt"):
        fte.read_split_texts("mmhs", root, "train")
    with pytest.raises(ValueError, match="Unknown dataset"):
        fte.read_split_texts("coco", root)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": \n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: invalid JSON"):
        fte.read_split_texts("hmd", bad, "train")
    (bad / "dev.jsonl").write_text('{"id": 1, "img": "img/00001.png"}\n')
    with pytest.raises(ValueError, match=r"dev\.jsonl, line 1 \(id 1\): text must be a string"):
        fte.read_split_texts("hmd", bad, "dev")
    with pytest.raises(ValueError, match=r"blank\.jsonl.*empty"):
        fte.train_fasttext(["", "  \n "], tmp_path / "empty.bin", source="blank.jsonl", **FAST)
    assert not (tmp_path / "empty.bin").exists()
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        fte.load_fasttext(tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        fte.add_text_embeddings(datasets.Dataset.from_list([{"text": "a"}]), tmp_path / "missing.bin")
    (tmp_path / "garbage.bin").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="garbage.bin"):
        fte.load_fasttext(tmp_path / "garbage.bin")


def test_cli_trains_and_refuses_to_overwrite(hmd, mmhs, tmp_path, capsys):
    root, _ = hmd
    out = tmp_path / "cli" / "ft.bin"
    args = ["--data-dir", str(root), "--output", str(out), "--epoch", "2", "--dim", "8", "--bucket", "10000",
            "--thread", "1", "--quiet"]
    assert fte.cli(["--dataset", "hmd", *args]) == 0
    assert fte.load_fasttext(out).get_dimension() == 8
    assert "hmd train" in json.loads(out.with_name("ft.bin.json").read_text())["source"]
    assert fte.cli(["--dataset", "hmd", *args]) == 2
    assert "--overwrite" in capsys.readouterr().err
    mmhs_root, _ = mmhs
    mmhs_args = [a if a != str(root) else str(mmhs_root) for a in args]
    assert fte.cli(["--dataset", "mmhs", *mmhs_args, "--overwrite", "--split", "val"]) == 0
    assert fte.cli(["--dataset", "hmd", *args, "--overwrite", "--split", "nope"]) == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_missing_fasttext_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fasttext", None)
    with pytest.raises(ImportError, match=r"hm_hf\[fasttext\]"):
        fte.train_fasttext(["some words"], "unused.bin")


def test_cli_output_and_data_dir_in_the_way(hmd, tmp_path, capsys):
    """A folder at --output, a file above it, or a file as --data-dir: a clear error before training, not an
    IsADirectoryError / FileExistsError traceback after it or "Data folder not found"."""
    root, _ = hmd
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    fast = ["--dataset", "hmd", "--epoch", "1", "--dim", "4", "--bucket", "1000", "--thread", "1", "--quiet"]

    (tmp_path / "x.bin.json").mkdir()  # where x.bin's settings record would go
    for output, in_the_way in ((folder, folder), (tmp_path / "x.bin", tmp_path / "x.bin.json")):
        for extra in ([], ["--overwrite"]):
            assert fte.cli([*fast, "--data-dir", str(root), "--output", str(output), *extra]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and f"{in_the_way} is a folder" in err and "--overwrite" not in err
    assert (folder / "keep.txt").read_text() == "mine"  # nothing replaced
    with pytest.raises(ValueError, match="is a folder"):
        fte.train_fasttext(["some words"], folder, **FAST)

    for output in (a_file / "x.bin", a_file / "sub" / "x.bin"):
        assert fte.cli([*fast, "--data-dir", str(root), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"{a_file} exists and is not a folder" in err and str(output) in err
    assert a_file.read_text() == "not a folder"

    assert fte.cli([*fast, "--data-dir", str(a_file), "--output", str(tmp_path / "ft.bin")]) == 1
    err = capsys.readouterr().err
    assert f"Data folder {a_file} is a file, not a folder" in err and "not found" not in err
    assert not (tmp_path / "ft.bin").exists()
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        fte.read_split_texts("hmd", a_file)


@pytest.mark.parametrize("cut", [12, 100, "half", -10, "extra"])
def test_truncated_or_damaged_models_are_refused_before_fasttext_reads_them(model_path, tmp_path, cut):
    """fastText's loader trusts the sizes in the file: a 12-byte prefix killed the process (SIGFPE), 100 bytes
    hung allocating, and half a model loaded with garbage vectors."""
    data = model_path.read_bytes()
    damaged = tmp_path / "ft.bin"
    if cut == "extra":
        damaged.write_bytes(data + b"\0\0\0\0")
    else:
        damaged.write_bytes(data[: len(data) // 2 if cut == "half" else cut])
    kind = "damaged" if cut == "extra" else "truncated"
    with pytest.raises(ValueError, match=rf"ft.bin: {kind} fastText model .*train it again or copy it again"):
        fte.load_fasttext(damaged)
    assert fte.load_fasttext(model_path).get_dimension() == DIM  # the whole file still loads


def test_a_settings_record_with_a_string_for_lowercase_is_refused(model_path, tmp_path):
    """bool("false") is True: such a hand-edited record lowercased the text the model was trained without."""
    import shutil

    model = shutil.copy(model_path, tmp_path / "ft.bin")
    record = tmp_path / "ft.bin.json"
    record.write_text(json.dumps({"lowercase": "false"}))
    with pytest.raises(ValueError, match=r"ft.bin.json: lowercase must be true or false, got 'false'"):
        fte.add_text_embeddings(datasets.Dataset.from_list([{"text": "a"}]), model)


@pytest.mark.parametrize("setting, message", [
    ({"bucket": 0}, "bucket must be a whole number >= 1"),  # fastText died of SIGFPE
    ({"thread": -1}, "thread must be a whole number >= 1"),  # aborted
    ({"lr": -1.0}, "lr must be a positive number"),  # trained nonsense
    ({"minn": 7, "maxn": 3}, "0 <= minn <= maxn"),  # reported as a diverged run on a small corpus
    ({"dim": 0}, "dim must be a whole number >= 1"),  # 0-dimensional vectors
])
def test_bad_training_settings_are_named_before_training(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        fte.train_fasttext(["some words here"] * 5, tmp_path / "ft.bin", **{**FAST, **setting})
    assert not (tmp_path / "ft.bin").exists()
    assert fte.train_fasttext(["some words here"] * 5, tmp_path / "ok.bin", **{**FAST, "bucket": 0, "minn": 0,
                                                                              "maxn": 0}).is_file()  # no subwords


def test_cli_bad_settings_keep_the_existing_model(hmd, tmp_path, capsys):
    root, _ = hmd
    out = tmp_path / "ft.bin"
    out.write_bytes(b"the existing model")
    assert fte.cli(["--dataset", "hmd", "--data-dir", str(root), "--output", str(out), "--bucket", "0", "--overwrite",
                    "--quiet"]) == 2
    assert "bucket must be a whole number >= 1" in capsys.readouterr().err
    assert out.read_bytes() == b"the existing model"


def test_a_run_stopped_between_record_and_model_leaves_a_refused_pair(model_path, tmp_path, monkeypatch):
    """The record is written first and names its model's size: stopped before the model is replaced, the old
    model beside the new record (lowercase, say) is refused instead of being embedded with the wrong cleaning."""
    import os
    import shutil

    model = shutil.copy(model_path, tmp_path / "ft.bin")
    shutil.copy(model_path.with_name("ft.bin.json"), tmp_path / "ft.bin.json")
    assert json.loads((tmp_path / "ft.bin.json").read_text())["model_bytes"] == model.stat().st_size
    replace = os.replace

    def stop_at_the_model(src, dst):
        if str(dst).endswith(".bin"):
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_at_the_model)
    with pytest.raises(KeyboardInterrupt):
        fte.train_fasttext(["Other Words Entirely"] * 5, model, lowercase=True, **FAST)
    monkeypatch.setattr(os, "replace", replace)
    assert json.loads((tmp_path / "ft.bin.json").read_text())["lowercase"] is True  # the new record, the old model
    with pytest.raises(ValueError, match=r"ft.bin.json records the settings of a \d+-byte model, but .*ft.bin has "
                                         r"\d+ bytes: .*train the model again"):
        fte.add_text_embeddings(datasets.Dataset.from_list([{"text": "a"}]), model)
