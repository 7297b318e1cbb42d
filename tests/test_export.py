"""Parquet export: `datasets.load_dataset(<folder>, <config>)` gives back the builder's rows; CLI; Hub push."""

from __future__ import annotations

import io
import os

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from hm_hf.data import export as export_module
from hm_hf.data.export import cli, export_dataset, parse_size, split_card
from hm_hf.data.hateful_memes import HatefulMemes
from hm_hf.data.mmhs150k import MMHS150K
from hm_hf.synthetic import make_hmd, make_mmhs, write_region_features
from hm_hf.synthetic.data import SYNTHETIC_MARKER

SIZE = (64, 48)


def _same_rows(built: datasets.Dataset, loaded: datasets.Dataset, columns):
    assert built.num_rows == loaded.num_rows
    assert loaded.features == built.features
    a = built.remove_columns("image").to_dict()
    b = loaded.remove_columns("image").to_dict()
    for column in columns:
        assert b[column] == a[column], column
    for x, y in zip(built["image"], loaded["image"]):
        assert x.size == y.size and x.mode == y.mode
        assert np.array_equal(np.asarray(x), np.asarray(y))  # same pixels: the bytes were embedded


def test_hmd_default_round_trip_and_card(tmp_path):
    memes = make_hmd(tmp_path / "data", splits={"train": 6, "dev_seen": 4, "test_unseen": 4}, image_size=SIZE)
    (tmp_path / "data" / SYNTHETIC_MARKER).unlink()  # stands in for the real data set
    builder = HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    out = export_dataset(builder, tmp_path / "out")
    built = builder.as_dataset()
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == list(built) == ["train", "dev_seen", "test_unseen"]
    for split in built:
        _same_rows(built[split], loaded[split], ["id", "text", "label"])
    assert loaded["test_unseen"]["label"] == [-1] * 4
    assert sorted(loaded["train"]["id"]) == sorted(m.id for m in memes["train"])

    # images are stored as bytes, never as this machine's paths
    table = pq.read_table(next((out / "default").glob("train-*.parquet")))
    image = table.column("image").to_pylist()[0]
    assert image["bytes"] and not os.path.isabs(image["path"] or "")
    Image.open(io.BytesIO(image["bytes"])).verify()

    header, body = split_card((out / "README.md").read_text())
    assert header["license"] == "other" and "extra_gated_prompt" in header
    assert header["size_categories"] == ["n<1K"] and header["pretty_name"] == "Hateful Memes"
    assert "may not be redistributed" in body
    assert [c["config_name"] for c in header["configs"]] == ["default"]  # only what was exported
    assert {f["split"] for f in header["configs"][0]["data_files"]} == {"train", "dev_seen", "test_unseen"}


def test_mmhs_two_configs_in_one_folder(tmp_path):
    memes = make_mmhs(tmp_path / "data", splits={"train": 4, "val": 2, "test": 2}, image_size=SIZE)
    write_region_features(memes, tmp_path / "feats")
    regions = MMHS150K(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", config_name="regions",
                       feature_cache=tmp_path / "feats")
    export_dataset(regions, tmp_path / "out", max_shard_size=20_000)  # small shards: several files
    default = MMHS150K(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    export_dataset(default, tmp_path / "out")
    assert len(list((tmp_path / "out" / "regions").glob("train-*-of-*.parquet"))) > 1

    loaded = datasets.load_dataset(str(tmp_path / "out"), "regions", cache_dir=str(tmp_path / "hf"))
    built = regions.as_dataset()
    for split in built:
        _same_rows(built[split], loaded[split],
                   ["id", "tweet_text", "img_text", "annotator_labels", "label", "fine_label", "num_boxes"])
        a = built[split].with_format("numpy")[:]
        b = loaded[split].with_format("numpy")[:]
        for x, y in zip(a["region_features"], b["region_features"]):
            assert np.array_equal(x, y)
        for x, y in zip(a["boxes"], b["boxes"]):
            assert np.array_equal(x, y)
    plain = datasets.load_dataset(str(tmp_path / "out"), "default", cache_dir=str(tmp_path / "hf"))
    assert "region_features" not in plain["train"].features
    assert plain["train"]["id"] == default.as_dataset()["train"]["id"]
    header, _ = split_card((tmp_path / "out" / "README.md").read_text())
    assert [c["config_name"] for c in header["configs"]] == ["default", "regions"]


def test_cli_and_private_push_without_printing_the_token(tmp_path, monkeypatch, capsys):
    make_hmd(tmp_path / "data", splits={"train": 4, "dev_seen": 2}, image_size=SIZE)
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, repo_type, private))

        def upload_folder(self, folder_path, repo_id, repo_type=None, **kwargs):
            calls.append(("upload_folder", sorted(os.listdir(folder_path)), repo_id, repo_type))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    secret = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", secret)
    args = ["--dataset", "hmd", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--push-to-hub", "org/hateful_memes"]
    assert cli(args) == 0
    assert ("create_repo", "org/hateful_memes", "dataset", True) in calls  # private by default
    assert ("upload_folder", ["README.md", "default"], "org/hateful_memes", "dataset") in calls
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert "train=4" in captured.out
    assert cli(args + ["--public"]) == 0  # synthetic memes (hm_hf's drawings) may be public
    assert ("create_repo", "org/hateful_memes", "dataset", False) in calls
    (tmp_path / "data" / SYNTHETIC_MARKER).unlink()  # now it stands for the real data set
    calls.clear()
    assert cli(args + ["--public", "--output", str(tmp_path / "o3")]) == 1
    assert "may not be redistributed" in capsys.readouterr().err and not calls
    with pytest.raises(ValueError, match="may not be redistributed"):  # the library refuses it
        export_dataset(HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"), tmp_path / "o2",
                       push_to_hub="org/x", private=False)
    # bad input in strict mode: a clear message and exit status 1, no traceback
    (tmp_path / "data" / "train.jsonl").write_text("{broken\n", encoding="utf-8")
    assert cli(args[:-2] + ["--strict"]) == 1
    assert "train.jsonl, line 1" in capsys.readouterr().err


def test_card_templates_are_valid():
    for name in ("hateful_memes", "mmhs150k"):
        text = (export_module.dataset_scripts_dir() / name / "README.md").read_text()
        header, body = split_card(text)
        assert {"configs", "task_categories", "license", "extra_gated_prompt", "extra_gated_fields"} <= set(header)
        assert {c["config_name"] for c in header["configs"]} == {"default", "regions"}
        assert "## Citation" in body and "build_report.json" in body
        yaml.safe_load(text.split("---")[1])
    assert parse_size("500MB") == 500_000_000 and parse_size("1GiB") == 2**30 and parse_size(10) == 10


# ------------------------------------------------------------------------ bad arguments, outputs and cards


def _small_data() -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": [1, 2], "text": ["a", "b"]})})


def _no_build(monkeypatch):
    """Make a build fail loudly, to show a refusal comes before it."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("the build ran before the refusal")

    monkeypatch.setattr(HatefulMemes, "download_and_prepare", refuse)


def test_only_the_files_the_card_links_travel_with_it(tmp_path):
    work = tmp_path / "mywork"
    (work / "img").mkdir(parents=True)
    (work / "img" / "fig.png").write_bytes(b"png")
    (work / "LICENSE.txt").write_text("terms")
    (work / "credentials.txt").write_text("hf_secret")
    (work / ".env").write_text("TOKEN=1")
    (tmp_path / "outside.txt").write_text("private")
    (work / "link.txt").symlink_to(tmp_path / "outside.txt")
    (work / "card.md").write_text(
        "---\nlicense: other\n---\n# Card\n![figure](img/fig.png \"Figure\") <img src=\"./img/fig.png\">\n"
        "[terms](LICENSE.txt#use) [up](../outside.txt) [env](.env) [sym](link.txt) [web](https://x.org/a.png)\n")
    out = export_dataset(_small_data(), tmp_path / "out", card=work / "card.md")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet")
    assert files == ["LICENSE.txt", "README.md", "img/fig.png"]
    assert (out / "img" / "fig.png").read_bytes() == b"png"
    assert "# Card" in (out / "README.md").read_text()


def test_a_bad_shard_size_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    make_hmd(tmp_path / "data", splits={"train": 2}, image_size=SIZE)
    _no_build(monkeypatch)
    args = ["--dataset", "hmd", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache")]
    for size in ("banana", "0MB"):
        with pytest.raises(SystemExit) as exit_info:
            cli(args + ["--max-shard-size", size])
        assert exit_info.value.code == 2
        assert "--max-shard-size: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot read the size 'banana'.*500MB"):
        export_dataset(HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"), tmp_path / "out",
                       max_shard_size="banana")
    assert not (tmp_path / "out").exists()


def test_a_push_to_a_name_that_is_no_repo_id_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    make_hmd(tmp_path / "data", splits={"train": 2}, image_size=SIZE)
    _no_build(monkeypatch)
    assert cli(["--dataset", "hmd", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                "--cache-dir", str(tmp_path / "cache"), "--push-to-hub", "my org/data"]) == 1
    assert "--push-to-hub 'my org/data' is not a Hub repo id" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    make_hmd(tmp_path / "data", splits={"train": 2}, image_size=SIZE)
    _no_build(monkeypatch)
    (tmp_path / "taken").write_text("keep me")
    for output, named in ((tmp_path / "taken", "is a file"), (tmp_path / "taken" / "sub", "taken is a file")):
        assert cli(["--dataset", "hmd", "--data-dir", str(tmp_path / "data"), "--output", str(output),
                    "--cache-dir", str(tmp_path / "cache")]) == 1
        err = capsys.readouterr().err
        assert f"output {output}" in err and named in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "keep me"


@pytest.mark.parametrize("header, message", [
    ("license: [other\n", r"README.md, line 2: cannot read its YAML header"),
    ("- a\n- b\n", r"README.md: its YAML header is a list, not a mapping"),
    ("configs: [default]\n", r"README.md: `configs` in its YAML header must be a list"),
], ids=["broken", "list", "configs"])
def test_a_broken_card_in_the_output_is_named_and_nothing_is_lost(tmp_path, header, message):
    out = tmp_path / "out"
    (out / "default").mkdir(parents=True)
    (out / "default" / "train-00000-of-00001.parquet").write_bytes(b"old shard")
    card = f"---\n{header}---\nmy notes\n"
    (out / "README.md").write_text(card)
    with pytest.raises(ValueError, match=message + ".*fix the YAML|" + message + ".*fix it") as err:
        export_dataset(_small_data(), out)
    assert str(out / "README.md") in str(err.value)
    assert (out / "README.md").read_text() == card  # refused before anything was written
    assert os.listdir(out / "default") == ["train-00000-of-00001.parquet"]


def test_a_broken_card_in_the_output_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    make_hmd(tmp_path / "data", splits={"train": 2}, image_size=SIZE)
    _no_build(monkeypatch)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("---\n- a\n---\n")
    assert cli(["--dataset", "hmd", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert "hm-hf export-dataset: error: " in err and "README.md: its YAML header is a list" in err


def test_the_exported_config_folder_is_readable_by_others(tmp_path):
    umask = os.umask(0o022)
    try:
        out = export_dataset(_small_data(), tmp_path / "out")
    finally:
        os.umask(umask)
    assert (out / "default").stat().st_mode & 0o777 == 0o755
    assert (next((out / "default").glob("*.parquet"))).stat().st_mode & 0o777 == 0o644


def test_synthetic_data_is_not_carded_as_the_real_data_set(tmp_path):
    """make-synthetic's memes exported: their card must not claim Meta's licence, gating or 10K-100K rows."""
    make_hmd(tmp_path / "data", splits={"train": 4, "dev_seen": 2}, image_size=SIZE)
    out = export_dataset(HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"), tmp_path / "out")
    header, body = split_card((out / "README.md").read_text())
    assert header["size_categories"] == ["n<1K"] and header["license"] == "apache-2.0"
    assert "synthetic-data" in header["tags"] and "Synthetic" in header["pretty_name"]
    assert not {"extra_gated_prompt", "license_link", "viewer"} & set(header)
    assert body.lstrip().startswith("> **Synthetic data.**")
    export_dataset(HatefulMemes(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"), out)  # exported again
    again, body = split_card((out / "README.md").read_text())
    assert again["pretty_name"] == header["pretty_name"] and body.count("**Synthetic data.**") == 1
    assert export_module.size_category(12_540) == "10K<n<100K" and export_module.size_category(150_000) == "100K<n<1M"
