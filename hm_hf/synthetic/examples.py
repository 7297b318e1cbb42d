"""The Space's example memes: one synthetic meme per combination of image kind and text kind.

Made by the data writer, so they are reproducible and free to redistribute (HMD's images are not);
``spaces/hateful_memes/examples/`` holds the committed copies (a test checks they are these).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hm_hf.fileio import atomic_path
from hm_hf.synthetic.data import make_hmd
from hm_hf.synthetic.world import REGION_KINDS

__all__ = ["make_examples"]


def make_examples(out_dir, seed: int = 0, image_size: tuple[int, int] = (320, 240)) -> list[Path]:
    """Write 4 synthetic example memes (PNG), one per (image kind, text kind); returns their paths.

    The names say what is drawn, not the label (the label is the XOR of the two kinds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        memes = make_hmd(tmp, splits={"dev_seen": 16}, seed=seed, image_size=image_size, unlabeled=())
        chosen = {}
        for meme in memes["dev_seen"]:
            chosen.setdefault((meme.image_kind, meme.text_kind), meme)
        paths = []
        for (image_kind, text_kind), meme in sorted(chosen.items()):
            shape = REGION_KINDS[image_kind].name.replace(" ", "-")
            path = out_dir / f"meme-{shape}-text-kind-{text_kind}.png"
            with atomic_path(path) as tmp_path:
                shutil.copyfile(Path(tmp) / "img" / f"{meme.id:05d}.png", tmp_path)
            paths.append(path)
    if len(paths) != 4:
        raise RuntimeError(f"expected one meme of each of the 4 kinds, got {len(paths)}")
    return paths
