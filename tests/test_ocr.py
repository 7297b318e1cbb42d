"""Meme OCR (hm_hf.ocr): the ppocr engine reads rendered meme captions word for word, the registry and its
named errors, the text normal form and error rates, and `hm-hf ocr`.

The memes are drawn by `hm_hf.ocr.render` (the benchmark's renderer) with fixed captions, so a failure
names the exact words read.
"""

from __future__ import annotations

import json
import random
import socket
import threading

import numpy as np
import pytest
from PIL import Image

import hm_hf.ocr as ocr
from hm_hf.ocr import OcrUnavailableError, get_ocr_engine, read_text
from hm_hf.ocr import render
from hm_hf.ocr.ppocr import ppocr_available
from hm_hf.ocr.text import character_error_rate, normalise_text, word_error_rate

needs_ppocr = pytest.mark.skipif(not ppocr_available(), reason="needs the hm_hf[ocr] extra (rapidocr, onnxruntime)")


def _fonts_missing() -> str:
    try:
        render.meme_fonts()
    except render.MemeFontsUnavailableError as err:  # CI installs them (the test extra, fonts-dejavu-core)
        return str(err)
    return ""


needs_fonts = pytest.mark.skipif(bool(_fonts_missing()), reason=_fonts_missing() or "fonts installed")


def caption_meme(top, bottom="", font="Anton", size=(640, 480), photo=0, **kw):
    photos = render.photographs()
    return render.render_caption_meme(photos[photo % len(photos)], top, bottom, font=font, size=size,
                                      rng=random.Random(1), **kw)


@pytest.fixture(scope="module")
def engine():
    if not ppocr_available():
        pytest.skip("needs the hm_hf[ocr] extra (rapidocr, onnxruntime)")
    return get_ocr_engine("ppocr")


@pytest.fixture(scope="module")
def memes():
    """(image, text) of memes in each style the benchmark draws."""
    if _fonts_missing():
        pytest.skip(_fonts_missing())
    card = "Me explaining to my mom why I need another plant for the living room."
    return [
        (caption_meme("the baby father", "came to the party with a cake", font="Anton"),
         "the baby father came to the party with a cake"),
        (caption_meme("when you open the fridge", "for the 7th time hoping new food appeared", font="Oswald Bold",
                      size=(550, 720), photo=3, fill=(255, 230, 40)),
         "when you open the fridge for the 7th time hoping new food appeared"),
        (caption_meme("i don't always test my code but when i do i do it in production", font="DejaVu Sans Bold",
                      size=(800, 600), photo=5, uppercase=False),
         "i don't always test my code but when i do i do it in production"),
        (render.render_text_card(card, size=(500, 500)), normalise_text(card)),
        (render.render_text_card(card, font="DejaVu Sans Bold", size=(640, 480), background=(225, 238, 250),
                                 photo=render.photographs()[1]), normalise_text(card)),
    ]


# ------------------------------------------------------------------------------------ the ppocr engine


def test_ppocr_reads_rendered_meme_captions_word_for_word(engine, memes):
    read = [engine.read(image) for image, _ in memes]
    assert read == [text for _, text in memes]
    assert engine.read(Image.new("RGB", (300, 200), (255, 255, 255))) == ""


@needs_fonts
def test_word_gaps_are_restored_from_the_recognisers_space_probability(engine):
    """Anton's tight spacing: RapidOCR's own decoding merges words, the space-probability gaps do not."""
    meme = caption_meme("when you see your neighbor watering the lawn in the rain", font="Anton", size=(960, 540),
                        font_scale=0.08)
    plain = get_ocr_engine("ppocr", space_probability=None)
    merged = plain.read(meme)
    assert normalise_text(merged.replace(" ", "")) == "whenyouseeyourneighborwateringthelawnintherain"
    assert word_error_rate([(merged, "when you see your neighbor watering the lawn in the rain")]) > 0
    assert engine.read(meme) == "when you see your neighbor watering the lawn in the rain"


def test_thin_strips_are_padded_so_detection_stays_bounded(engine, monkeypatch):
    """RapidOCR scales the short side up to 736 pixels: unpadded, a 1 x 400 upload would become a 4.5 GiB
    array (the Space's OCR, reachable by anyone). What reaches it is at most MAX_ASPECT_RATIO : 1."""
    from types import SimpleNamespace

    from hm_hf.ocr.ppocr import MAX_ASPECT_RATIO

    shapes = []

    def spy(bgr):  # records what would be detected on, and detects nothing (never allocates the strip's array)
        shapes.append(bgr.shape[:2])
        return SimpleNamespace(boxes=None, txts=None, scores=None)

    monkeypatch.setattr(engine, "_ocr", spy)
    for size in [(1, 400), (4000, 40), (640, 480)]:
        assert engine.read(Image.new("RGB", size, (30, 90, 200))) == ""
    assert [max(s) / min(s) <= MAX_ASPECT_RATIO for s in shapes] == [True, True, True]
    assert shapes == [(400, 100), (40 * 25, 4000), (480, 640)]


@needs_fonts
def test_a_banner_is_read_after_padding(engine):
    """Padding keeps the text's own size: a 20 : 1 banner and a 1 : 12 column read word for word."""
    card = "Me explaining to my mom why I need another plant"
    for size in [(1800, 90), (120, 1400)]:
        assert engine.read(render.render_text_card(card, size=size)) == normalise_text(card)


@needs_ppocr
def test_read_text_defaults_to_ppocr_and_engines_are_shared(memes):
    assert ocr.resolve_engine("auto") == "ppocr"
    assert get_ocr_engine() is get_ocr_engine("auto") is get_ocr_engine("ppocr")
    image, text = memes[0]
    assert read_text(image) == text
    info = get_ocr_engine().info()
    assert info["engine"] == "ppocr" and info["lang"] == "eng"
    assert "rapidocr 3.10.0" in info["version"] and "PP-OCRv6" in info["version"] and "onnxruntime" in info["version"]


def test_concurrent_reads_give_the_same_text(engine, memes):
    """A Gradio app calls one shared engine from several threads."""
    images = [image for image, _ in memes[:2]]
    expected = [engine.read(image) for image in images]
    results, errors = {}, []

    def work(i):
        try:
            results[i] = engine.read(images[i % 2])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [results[i] for i in range(4)] == expected * 2


@needs_ppocr
def test_nothing_is_downloaded_at_run_time(monkeypatch, memes):
    """A fresh engine loads its models from the installed wheel and reads with the network cut."""
    def no_network(*args, **kwargs):
        raise AssertionError("the OCR engine tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from hm_hf.ocr.ppocr import PpOcrEngine

    fresh = PpOcrEngine(threads=1)
    image, text = memes[0]
    assert fresh.read(image) == text


def test_reading_order_and_noise_boxes():
    from hm_hf.ocr.ppocr import _reading_order

    def box(x1, y1, x2, y2):
        return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]

    boxes = [box(100, 107, 480, 189), box(18, 116, 129, 183),  # one line: "you" starts lower, further left
             box(18, 22, 481, 94), box(150, 260, 175, 275), box(146, 198, 349, 272)]
    texts = ["realize it's only", "you", "that moment when", "AAAA", "tuesday"]
    scores = [1.0, 1.0, 1.0, 0.6, 1.0]  # the small low-scored box is a photo texture
    assert _reading_order(boxes, texts, scores) == ["that moment when", "you", "realize it's only", "tuesday"]
    assert _reading_order([], [], []) == []


# ------------------------------------------------------------------------------------ registry + errors


def test_missing_engines_are_named_errors(monkeypatch):
    import hm_hf.ocr.ppocr as ppocr_module

    monkeypatch.setattr(ppocr_module, "ppocr_available", lambda: False)
    with pytest.raises(OcrUnavailableError, match=r"pip install 'hm_hf\[ocr\]'"):
        ppocr_module.PpOcrEngine()
    monkeypatch.setitem(ocr.ENGINES, "ppocr", (ocr.ENGINES["ppocr"][0], lambda: False))
    monkeypatch.setitem(ocr.ENGINES, "tesseract", (ocr.ENGINES["tesseract"][0], lambda: True))
    assert ocr.resolve_engine("auto") == "tesseract"  # the fallback
    monkeypatch.setitem(ocr.ENGINES, "tesseract", (ocr.ENGINES["tesseract"][0], lambda: False))
    with pytest.raises(OcrUnavailableError, match=r"no OCR engine is installed.*hm_hf\[ocr\].*tesseract-ocr"):
        read_text(Image.new("RGB", (10, 10)))
    with pytest.raises(ValueError, match="unknown OCR engine 'easyocr'; choose one of auto, ppocr, tesseract"):
        get_ocr_engine("easyocr")


def test_tesseract_missing_is_a_named_error(monkeypatch):
    import hm_hf.ocr.tesseract as tesseract_module

    monkeypatch.setattr(tesseract_module, "tesseract_available", lambda: False)
    with pytest.raises(OcrUnavailableError, match="apt-get install tesseract-ocr"):
        tesseract_module.TesseractEngine()


def test_other_languages_go_to_tesseract():
    with pytest.raises(ValueError, match="reads English.*engine='tesseract'"):
        get_ocr_engine("ppocr", lang="deu")
    if ocr.tesseract_available():
        assert ocr.resolve_engine("auto", lang="deu") == "tesseract"


# ------------------------------------------------------------------------------------ text + scores


def test_normalise_text_gives_the_data_sets_form():
    assert normalise_text("  LOOK! It  SAYS it\nright HERE!  ") == "look! it says it right here!"
    assert normalise_text("SLEÉP, EAT, REPÉAT") == "sleep, eat, repeat"  # accents a recogniser invents
    assert normalise_text("WHEN·THE RAIN") == "when the rain"
    assert normalise_text("Grüße", lang="deu") == "grüße"  # other languages keep theirs


def test_error_rates():
    truth = "the baby father came"
    assert character_error_rate([("thebabyfather came", truth)]) == 0.0  # spaces ignored
    assert word_error_rate([("thebabyfather came", truth)]) == pytest.approx(3 / 4)  # 1 substitution + 2 deletions
    assert word_error_rate([("The baby, father came!", truth)]) == 0.0  # case and punctuation ignored
    assert word_error_rate([("don't stop", "dont stop")]) == 0.0
    assert character_error_rate([("the bady father came", truth)]) == pytest.approx(1 / 17)
    assert character_error_rate([("", truth), (truth, truth)]) == pytest.approx(17 / 34)


@needs_fonts
def test_benchmark_memes_are_reproducible_and_mixed():
    first, again = render.benchmark_memes(8, seed=3), render.benchmark_memes(8, seed=3)
    assert [m.text for m in first] == [m.text for m in again]
    assert np.array_equal(np.asarray(first[0].image), np.asarray(again[0].image))
    many = render.benchmark_memes(24, seed=0)
    assert {m.style for m in many} == {"caption", "card"}
    assert len({m.font for m in many}) >= 3 and len({m.image.size for m in many}) >= 3
    assert all(m.text == normalise_text(m.text) for m in many)


# ------------------------------------------------------------------------------------ hm-hf ocr


@needs_ppocr
def test_hm_hf_ocr_writes_annotation_lines_and_resumes(tmp_path, memes, monkeypatch, capsys):
    from hm_hf.cli import main
    from hm_hf.ocr.ppocr import PpOcrEngine

    img = tmp_path / "memes" / "img"
    img.mkdir(parents=True)
    memes[0][0].save(img / "00001.png")
    memes[3][0].save(img / "00042.jpg")
    (img / "00007.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # unreadable: skipped and counted
    (img / "notes.txt").write_text("not an image")
    output = tmp_path / "memes" / "test_unseen.jsonl"
    calls = []
    original_read = PpOcrEngine.read
    monkeypatch.setattr(PpOcrEngine, "read", lambda self, image: calls.append(image.size) or original_read(self, image))

    assert main(["ocr", str(img), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows == [{"id": 1, "img": "img/00001.png", "text": memes[0][1]},
                    {"id": 42, "img": "img/00042.jpg", "text": memes[3][1]}]
    err = capsys.readouterr().err
    assert "skipped 1 images that could not be read" in err and "00007.png" in err
    assert len(calls) == 2

    # a kill mid-line, then a new image: only the new one is read, the broken line is dropped
    with open(output, "a") as f:
        f.write('{"id": 5, "img": "img/000')
    memes[1][0].save(img / "00005.png")
    assert main(["ocr", str(img), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 42, 5] and rows[2]["text"] == memes[1][1]
    assert len(calls) == 3
    assert "incomplete last line" in capsys.readouterr().err

    # the output is a Hateful Memes annotation file (a test split: no labels)
    import hm_hf

    split = hm_hf.load_hmd(tmp_path / "memes", cache_dir=tmp_path / "cache")["test_unseen"]
    assert sorted(split["id"]) == [1, 5, 42] and set(split["label"]) == {-1}
    assert dict(zip(split["id"], split["text"]))[5] == memes[1][1]


@needs_ppocr
def test_hm_hf_ocr_refuses_a_foreign_output_file(tmp_path, memes, capsys):
    from hm_hf.ocr.cli import cli

    memes[0][0].save(tmp_path / "1.png")
    output = tmp_path / "out.jsonl"
    output.write_text("id,text\n")
    assert cli([str(tmp_path / "1.png"), "--output", str(output)]) == 2
    assert f"{output}:1: not an annotation line" in capsys.readouterr().err
    assert output.read_text() == "id,text\n"  # left as it was
    for foreign in ("[" * 100_000 + "]" * 100_000 + "\n", b"\xff\xfe not text\n"):  # too deep; not UTF-8
        output.write_bytes(foreign if isinstance(foreign, bytes) else foreign.encode())
        assert cli([str(tmp_path / "1.png"), "--output", str(output)]) == 2
        assert f"{output}:1: not an annotation line" in capsys.readouterr().err
    assert cli([str(tmp_path / "missing.png"), "--output", str(tmp_path / "new.jsonl")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err


class _FakeEngine:
    """An OCR engine that reads every image as "text of WxH": the CLI tests below need no OCR install."""

    name, version = "fake", "0"

    def read(self, image):
        return "text of {}x{}".format(*image.size)


@pytest.fixture
def ocr_cli(monkeypatch):
    from hm_hf.ocr.cli import cli

    monkeypatch.setattr(ocr, "get_ocr_engine", lambda *args, **kwargs: _FakeEngine())
    return cli


def _png(path, size=(8, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def test_hm_hf_ocr_keeps_a_whole_last_line_without_a_newline(tmp_path, ocr_cli, capsys):
    _png(tmp_path / "img" / "9.png")
    output = tmp_path / "test_unseen.jsonl"
    kept = '{"id": 7, "img": "img/7.png", "text": "x"}\n{"id": 8, "img": "img/8.png", "text": "last"}'
    output.write_text(kept)
    assert ocr_cli([str(tmp_path / "img"), "--output", str(output)]) == 0
    assert output.read_text() == kept + '\n{"id": 9, "img": "img/9.png", "text": "text of 8x4"}\n'
    assert "incomplete" not in capsys.readouterr().err


def test_hm_hf_ocr_drops_only_a_line_it_was_writing(tmp_path, ocr_cli, capsys):
    _png(tmp_path / "img" / "9.png")
    output = tmp_path / "test_unseen.jsonl"
    output.write_bytes('{"id": 7, "img": "img/7.png", "text": "x"}\n{"id": 8, "img": "img/8.png", "text": "\u00e9'
                       .encode()[:-1])  # killed inside a two-byte character
    assert ocr_cli([str(tmp_path / "img"), "--output", str(output)]) == 0
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [7, 9]
    assert f"{output}:2: dropping an incomplete last line" in capsys.readouterr().err

    for foreign in (b"my notes", b'{"id": 7, "img": "img/7.png", "text": "x"}\n{"id": 8}',
                    b'{"id": 7, "img": "img/7.png", "text": "x"}\n[{"id": 8, "img": "img/8.png"'):
        output.write_bytes(foreign)
        assert ocr_cli([str(tmp_path / "img"), "--output", str(output)]) == 2
        line = foreign.count(b"\n") + 1
        assert f"{output}:{line}: not an annotation line" in capsys.readouterr().err
        assert output.read_bytes() == foreign  # left as it was


def test_hm_hf_ocr_ids_of_non_ascii_digit_names_are_their_names(tmp_path, ocr_cli):
    _png(tmp_path / "img" / "\u00b2\u00b3.png")  # superscript digits: str.isdigit, but int() refuses them
    _png(tmp_path / "img" / "\u0663.png")  # Arabic-Indic three: int() reads 3, not HMD's numbering
    _png(tmp_path / "img" / "0042.png")
    _png(tmp_path / "img" / "12345678901234567890.png")  # beyond int64: the builders would refuse it as a number
    output = tmp_path / "out.jsonl"
    assert ocr_cli([str(tmp_path / "img"), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert sorted(map(str, (r["id"] for r in rows))) == ["12345678901234567890", "42", "\u00b2\u00b3", "\u0663"]
    assert {type(r["id"]) for r in rows if r["img"] != "img/0042.png"} == {str}


def test_hm_hf_ocr_bad_files_from_and_output_are_named_errors(tmp_path, ocr_cli, capsys):
    image = _png(tmp_path / "img" / "1.png")
    output = tmp_path / "out.jsonl"
    missing = tmp_path / "missing.txt"
    assert ocr_cli(["--files-from", str(missing), "--output", str(output)]) == 2
    assert f"--files-from {missing}: cannot read it (No such file or directory)" in capsys.readouterr().err
    latin1 = tmp_path / "list.txt"
    latin1.write_bytes(b"img/1.png\nimg/caf\xe9.png\n")
    assert ocr_cli(["--files-from", str(latin1), "--output", str(output)]) == 2
    assert f"--files-from {latin1}:2: not UTF-8 text" in capsys.readouterr().err
    assert not output.exists()

    latin1.write_bytes(b"\xef\xbb\xbfimg/1.png\n")  # UTF-8 with a byte-order mark (Windows Notepad)
    assert ocr_cli(["--files-from", str(latin1), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["id"] == 1

    assert ocr_cli([str(image), "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a folder" in capsys.readouterr().err
    in_a_file = output / "x.jsonl"  # out.jsonl is a file: nothing can be written under it
    assert ocr_cli([str(image), "--output", str(in_a_file)]) == 2
    assert f"--output {in_a_file}: {output} exists and is not a folder" in capsys.readouterr().err
