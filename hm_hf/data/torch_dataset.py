"""Fast batched row access for training: region features as zero-copy numpy views of the Arrow data.

`datasets` turns an `Array2D` cell into nested Python lists (or, with the numpy format, copies it through
them), which costs ~10-20 ms per image of 2048-d regions. `RegionRowsDataset` instead reads a whole batch
of rows as one Arrow table and slices the flat float16 buffer, so the DataLoader (which calls
`__getitems__` with a batch of indices) gets each row's regions as an (N, 2048) view without copying.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

ARRAY_COLUMNS = {"region_features": np.float16, "boxes": np.float32}


def _rows_of_2d(column: pa.ChunkedArray, width_hint: int | None = None) -> list[np.ndarray]:
    """Split an Array2D column (rows of N x D) into per-row numpy arrays without per-value copies."""
    array = column.combine_chunks()
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    if width_hint is None:  # an Array2D column knows its width: (None, D); rows of no region keep it
        shape = getattr(column.type, "shape", None)
        width_hint = shape[-1] if shape and isinstance(shape[-1], int) else None
    row_offsets = storage.offsets.to_numpy()
    inner = storage.flatten()  # one list per region
    values = inner.flatten().to_numpy(zero_copy_only=False)
    num_regions = len(inner)
    width = (len(values) // num_regions) if num_regions else (width_hint or 0)
    matrix = values.reshape(num_regions, width) if num_regions else values.reshape(0, width)
    start = row_offsets[0]
    return [matrix[a - start:b - start] for a, b in zip(row_offsets[:-1], row_offsets[1:])]


class RegionRowsDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` seen as a torch Dataset whose region columns come out as numpy arrays.

    Other columns come out as Python values, as `dataset[i]` gives them (images stay undecoded bytes
    dicts unless `decode_images`).
    """

    def __init__(self, dataset, decode_images: bool = False):
        self.dataset = dataset
        self.array_columns = [c for c in ARRAY_COLUMNS if c in dataset.column_names]
        self.other_columns = [c for c in dataset.column_names if c not in self.array_columns]
        self.decode_images = decode_images
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        table = self._arrow[list(indices)]
        columns = {name: table.column(name).to_pylist() for name in self.other_columns}
        if self.decode_images and "image" in columns:
            columns["image"] = [self._decode_image(value, columns, i) for i, value in enumerate(columns["image"])]
        for name in self.array_columns:
            columns[name] = _rows_of_2d(table.column(name))
        return [{name: values[i] for name, values in columns.items()} for i in range(len(indices))]

    def _decode_image(self, value: dict, columns: dict, row: int):
        try:
            return self.dataset.features["image"].decode_example(value)
        except Exception as err:  # deleted or rewritten since the build: name it instead of a traceback
            example_id = columns["id"][row] if "id" in columns else "?"
            raise ValueError(
                f"the image of id {example_id} ({value.get('path') or 'embedded bytes'}) can no longer be read "
                f"({type(err).__name__}: {err}); it changed after the data set was prepared: load the data set "
                "again (hm_hf.load_hmd / load_mmhs), which notices the change and rebuilds it"
            ) from None

    @property
    def column_names(self) -> list[str]:
        return self.dataset.column_names
