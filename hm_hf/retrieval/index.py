"""A labelled nearest-neighbour index over memes' fused embeddings, and the kNN vote that decides by it.

RGCL (Mei et al., ACL 2024) keeps the training set's embeddings in a vector database: during training it
retrieves each meme's pseudo-gold positive (the nearest same-label meme) and hard negatives (the nearest
opposite-label memes), and at inference its retrieval-based classifier labels a meme by a vote of its K
nearest labelled neighbours. New labelled memes added to the index change the vote with no retraining.

Search is exact cosine similarity in torch (L2-normalised vectors, one matrix product and ``topk``): at
Hateful Memes scale (8,500 x 1,024) a query batch costs about a millisecond on a CPU, so no approximate
index (faiss) is needed; ``benchmarks/retrieval_search.py`` measures it against a numpy brute force.

On disk (beside a model, written by ``save_pretrained``): ``retrieval_index.json`` (ids, labels, sources,
which vectors file and its sha256) and the vectors in ``retrieval_index-<sha256[:16]>.safetensors``. A
save writes the vectors under a new name first and then atomically replaces the JSON, which is the commit
point: a crash at any moment leaves the previous index readable, never a mix of two.

Example:
    >>> import torch
    >>> from hm_hf.retrieval import RetrievalIndex
    >>> index = RetrievalIndex(dim=2)
    >>> index.add(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), labels=[1, 0], ids=[10, 11], source="train")
    >>> scores, rows = index.search(torch.tensor([[0.9, 0.1]]), k=1)
    >>> index.ids[int(rows[0, 0])]
    10
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F

from hm_hf.fileio import atomic_path, atomic_write_text, read_json_object

__all__ = ["INDEX_FILE", "KNN_VOTES", "REBUILD_HINT", "IndexError_", "RetrievalIndex", "knn_probability",
           "probability_to_logits", "read_index_settings"]

INDEX_FILE = "retrieval_index.json"
_VECTORS_PREFIX = "retrieval_index-"
FORMAT_VERSION = 1
#: how the K neighbours vote (`knn_probability`): the share of hateful neighbours weighted by similarity, by
#: rank or equally; or, as RGCL's official code scores, each neighbour's similarity signed by its label, ranked
#: ("signed_rank": the code's "arithmetic", its published run) or equally weighted ("signed_mean": its "mean")
KNN_VOTES = ("similarity", "rank", "mean", "signed_rank", "signed_mean")
#: what to do about an index that cannot be used (`hm-hf index add` refuses to add to it while it is there)
REBUILD_HINT = (f"restore it from a copy, or delete {INDEX_FILE} and the {_VECTORS_PREFIX}*.safetensors beside it "
                "and build it again from the labelled memes: hm-hf index add <model folder> <data>/train.jsonl "
                "--source train")


class IndexError_(ValueError):
    """A retrieval index that cannot be used (damaged, inconsistent, a duplicate id); the message names it."""


class RetrievalIndex:
    """L2-normalised vectors with an id, a label (0 benign / 1 hateful) and a source name per row."""

    def __init__(self, dim: int):
        if dim < 1:
            raise ValueError(f"RetrievalIndex: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.vectors = torch.empty(0, self.dim, dtype=torch.float32)
        self.labels: list[int] = []
        self.ids: list[int] = []
        self.sources: list[str] = []  # source name per row
        self._id_tensor = torch.empty(0, dtype=torch.long)
        self._label_tensor = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, meme_id) -> bool:
        return int(meme_id) in self._id_set()

    def _id_set(self) -> set[int]:
        if getattr(self, "_ids_cache", None) is None or len(self._ids_cache) != len(self.ids):
            self._ids_cache = set(self.ids)
        return self._ids_cache

    def source_counts(self) -> dict[str, int]:
        """{source name: rows}, in the order the sources were first added."""
        counts: dict[str, int] = {}
        for source in self.sources:
            counts[source] = counts.get(source, 0) + 1
        return counts

    def add(self, vectors: torch.Tensor, labels: Sequence[int], ids: Sequence[int], source: str) -> None:
        """Append rows (vectors are normalised here). A duplicate id (already indexed, or twice in this call)
        or a label other than 0 / 1 is refused and nothing is added."""
        vectors, labels, ids = self._checked_rows(vectors, labels, ids)
        self.vectors = torch.cat([self.vectors, F.normalize(vectors, dim=-1)])
        self.labels += labels
        self.ids += ids
        self.sources += [str(source)] * len(ids)
        self._refresh()

    def _checked_rows(self, vectors, labels, ids, where: str = "") -> tuple[torch.Tensor, list[int], list[int]]:
        """(vectors as float32, labels, ids) of rows to add, refused unless each fits this index: vectors of its
        dim and finite, a label 0 / 1 and a new int64 id per row. `where` prefixes the messages (a file)."""
        vectors = torch.as_tensor(vectors, dtype=torch.float32).detach().cpu()
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IndexError_(f"{where}vectors of shape {tuple(vectors.shape)} do not fit an index of dim {self.dim}")
        labels, ids = _whole_numbers(labels, "label", where), _whole_numbers(ids, "id", where)
        if not (len(labels) == len(ids) == vectors.shape[0]):
            raise IndexError_(f"{where}{vectors.shape[0]} vectors, {len(labels)} labels and {len(ids)} ids: give "
                              "one each")
        if not torch.isfinite(vectors).all():
            raise IndexError_(f"{where}vectors hold NaN or infinite values")
        bad = [(i, label) for i, label in zip(ids, labels) if label not in (0, 1)]
        if bad:
            raise IndexError_(f"{where}id {bad[0][0]}: label {bad[0][1]} is not 0 (benign) or 1 (hateful)")
        out_of_range = [i for i in ids if not -2**63 <= i < 2**63]
        if out_of_range:
            raise IndexError_(f"{where}id {out_of_range[0]} does not fit in 64 bits")
        known, seen = self._id_set(), set()
        for meme_id in ids:
            if meme_id in known or meme_id in seen:
                raise IndexError_(f"{where}id {meme_id} is already in the index: ids must be unique")
            seen.add(meme_id)
        return vectors, labels, ids

    def _refresh(self) -> None:
        self._id_tensor = torch.tensor(self.ids, dtype=torch.long)
        self._label_tensor = torch.tensor(self.labels, dtype=torch.long)
        self._ids_cache = None
        self._rows_cache = None

    def _row_of_id(self) -> dict[int, int]:
        if getattr(self, "_rows_cache", None) is None:
            self._rows_cache = {meme_id: row for row, meme_id in enumerate(self.ids)}
        return self._rows_cache

    @property
    def label_tensor(self) -> torch.Tensor:
        return self._label_tensor

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, exclude_ids: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact cosine search: (scores, rows), each (Q, min(k, len)), best first.

        ``exclude_ids`` (Q,): each query's own id, never returned (a training meme is not its own neighbour).
        ``mask`` (Q, N) bool: only rows where it is True may be returned. Where fewer rows qualify, the
        remaining places hold score ``-inf`` and row -1.
        """
        queries = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=-1)
        vectors = self.vectors.to(queries.device)
        k = min(int(k), len(self))
        if k == 0:
            empty = queries.new_empty(queries.shape[0], 0)
            return empty, empty.long()
        scores = queries @ vectors.T
        if mask is not None:
            scores = scores.masked_fill(~mask.to(scores.device), float("-inf"))
        if exclude_ids is not None:  # each query's own row (if indexed) set to -inf: O(Q), no (Q, N) compare
            rows_of = self._row_of_id()
            own = [(q, rows_of[int(i)]) for q, i in enumerate(exclude_ids.tolist()) if int(i) in rows_of]
            if own:
                q_idx, r_idx = zip(*own)
                scores[list(q_idx), list(r_idx)] = float("-inf")
        top, rows = scores.topk(k, dim=-1)
        rows = rows.masked_fill(torch.isinf(top), -1)
        return top, rows

    def neighbours(self, queries: torch.Tensor, k: int, exclude_ids: torch.Tensor | None = None) -> dict:
        """The `k` nearest rows of each query as tensors: ``scores``, ``rows``, ``ids`` and ``labels`` (Q, k);
        -1 where a query has fewer than k neighbours."""
        scores, rows = self.search(queries, k, exclude_ids)
        valid = rows >= 0
        safe = rows.clamp(min=0).cpu()
        ids = torch.where(valid.cpu(), self._id_tensor[safe], torch.full_like(safe, -1))
        labels = torch.where(valid.cpu(), self._label_tensor[safe], torch.full_like(safe, -1))
        return {"scores": scores, "rows": rows, "ids": ids.to(rows.device), "labels": labels.to(rows.device)}

    # ------------------------------------------------------------------ files

    def save(self, folder) -> Path:
        """Write the index into `folder` (atomically, see the module docstring); returns the JSON's path."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vectors = self.vectors.contiguous()
        digest = hashlib.sha256(vectors.numpy().tobytes()).hexdigest()
        name = f"{_VECTORS_PREFIX}{digest[:16]}.safetensors"
        with atomic_path(folder / name) as tmp:  # written even when the name exists: that file may be damaged
            save_file({"vectors": vectors}, str(tmp), metadata={"format": "pt", "sha256": digest})
        names = sorted(set(self.sources), key=self.sources.index)
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "size": len(self),
            "metric": "cosine",
            "vectors_file": name,
            "vectors_sha256": digest,
            "source_names": names,
            "sources": self.source_counts(),
            "ids": self.ids,
            "labels": self.labels,
            "source_of_row": [names.index(s) for s in self.sources],
        }
        atomic_write_text(folder / INDEX_FILE, json.dumps(meta) + "\n")
        for stale in folder.glob(f"{_VECTORS_PREFIX}*.safetensors"):  # vectors no longer referenced
            if stale.name != name:
                try:
                    stale.unlink()
                except OSError:
                    pass
        return folder / INDEX_FILE

    @classmethod
    def load(cls, folder, json_path=None, vectors_path=None, dim: int | None = None) -> "RetrievalIndex":
        """Read an index saved by `save` (from `folder`, or from the two files given, e.g. Hub downloads), checked
        as `add` checks new rows; `dim`: the embedding size of the model it is for."""
        from safetensors.torch import load_file

        json_path = Path(json_path) if json_path else Path(folder) / INDEX_FILE
        meta = read_index_settings(json_path)
        try:
            dim_saved, size, name = int(meta["dim"]), int(meta["size"]), str(meta["vectors_file"])
            ids, labels, names = list(meta["ids"]), list(meta["labels"]), list(meta["source_names"])
            of_row = list(meta["source_of_row"])
        except (KeyError, TypeError, ValueError) as err:
            raise IndexError_(f"{json_path}: missing or malformed field {err}") from err
        if os.sep in name or "/" in name or not name.startswith(_VECTORS_PREFIX):
            raise IndexError_(f"{json_path}: vectors_file {name!r} is not an index vectors file")
        vectors_path = Path(vectors_path) if vectors_path else json_path.parent / name
        try:
            vectors = load_file(str(vectors_path))["vectors"].float()
        except Exception as err:  # (safetensors raises its own error types for damaged files)
            raise IndexError_(f"{vectors_path}: cannot read the index vectors ({err})") from err
        digest = hashlib.sha256(vectors.contiguous().numpy().tobytes()).hexdigest()
        if digest != meta.get("vectors_sha256"):
            raise IndexError_(f"{vectors_path}: contents do not match {json_path} (sha256 differs): the index is "
                              f"damaged; {REBUILD_HINT}")
        if vectors.shape != (size, dim_saved) or not (len(ids) == len(labels) == len(of_row) == size):
            raise IndexError_(f"{json_path}: sizes disagree (vectors {tuple(vectors.shape)}, {len(ids)} ids, "
                              f"{len(labels)} labels, size {size})")
        if dim is not None and dim_saved != dim:
            raise IndexError_(f"{json_path}: its vectors have {dim_saved} dimensions, the model's embeddings {dim}: "
                              f"the index belongs to another model; {REBUILD_HINT}")
        if any(not isinstance(i, int) or not 0 <= i < len(names) for i in of_row):
            raise IndexError_(f"{json_path}: source_of_row refers to a source that is not listed")
        index = cls(dim_saved)
        index.vectors, index.labels, index.ids = index._checked_rows(vectors, labels, ids, where=f"{json_path}: ")
        index.sources = [str(names[i]) for i in of_row]
        index._refresh()
        return index

    @staticmethod
    def files_in(folder) -> bool:
        return (Path(folder) / INDEX_FILE).is_file()


def _whole_numbers(values: Sequence, what: str, where: str) -> list[int]:
    """`values` as ints, refusing any that is not a whole number (0.7, "abc", None) rather than rounding it."""
    numbers = []
    for value in values:
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or number != value:
            raise IndexError_(f"{where}{what} {value!r} is not a whole number")
        numbers.append(number)
    return numbers


def read_index_settings(json_path) -> dict:
    """The JSON object of a saved index's ``retrieval_index.json``, read with hm_hf's checked JSON parser: a
    damaged, truncated, too deeply nested or non-UTF-8 file is an `IndexError_` naming it."""
    try:
        return read_json_object(json_path, "retrieval-index settings",
                                f"the index is damaged: {REBUILD_HINT}")
    except (OSError, ValueError) as err:
        raise IndexError_(f"{json_path}: not a readable retrieval index ({err})") from None


def knn_probability(scores: torch.Tensor, labels: torch.Tensor, vote: str = "similarity") -> torch.Tensor:
    """P(hateful) from each query's neighbours (Q, K, best first): their scores (cosine similarities) and labels.

    Weights ``w_k``: ``rank`` and ``signed_rank`` K, K-1, ..., 1; ``similarity`` the similarity shifted to be
    positive, (s + 1) / 2, so that a neighbour never counts against its own label; ``mean`` and ``signed_mean`` 1.

    * ``similarity``, ``rank``, ``mean``: the weighted share of hateful neighbours, ``sum w [y = 1] / sum w``;
    * ``signed_rank``, ``signed_mean``: RGCL's retrieval classifier as its official code scores it
      (JingbiaoMei/RGCL, src/utils/metrics.py): ``v = sum w (2y - 1) s / sum w`` in [-1, 1], returned as
      ``(v + 1) / 2``. That map is increasing, so the AUROC is the code's (computed on ``v``), and P > 0.5
      exactly where the code predicts hateful (``sigmoid(v) >= 0.5``, i.e. v > 0; v = 0 gives 0.5).

    Missing neighbours (label -1) get no weight; a query with none gets 0.5.
    """
    if vote not in KNN_VOTES:
        raise ValueError(f"knn vote must be one of {KNN_VOTES}, got {vote!r}")
    valid = (labels >= 0).float()
    if vote == "similarity":
        weights = ((scores.clamp(-1, 1) + 1) / 2).nan_to_num(0.0)
    elif vote in ("rank", "signed_rank"):
        k = scores.shape[-1]
        weights = torch.arange(k, 0, -1, device=scores.device, dtype=torch.float32).expand_as(scores)
    else:
        weights = torch.ones_like(scores)
    weights = weights * valid
    total = weights.sum(-1)
    if vote.startswith("signed_"):
        signed = (2 * (labels == 1).float() - 1) * scores.clamp(-1, 1).nan_to_num(0.0)
        p = ((weights * signed).sum(-1) / total.clamp(min=1e-12) + 1) / 2
    else:
        p = (weights * (labels == 1).float()).sum(-1) / total.clamp(min=1e-12)
    return torch.where(total > 0, p, torch.full_like(total, 0.5))


def probability_to_logits(p: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Two-class logits [0, log(p / (1 - p))] whose softmax is (1 - p, p): a kNN probability in the form
    every hm_hf consumer (evaluation, calibration, the pipeline) reads."""
    p = p.clamp(eps, 1 - eps)
    return torch.stack([torch.zeros_like(p), torch.log(p) - torch.log1p(-p)], dim=-1)
