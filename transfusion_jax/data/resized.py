"""A resized copy of a dataset, written once, so that training decodes small images instead of originals.

Kaggle's fundus photographs are several megapixels each; decoding and resizing them again in every epoch costs
more host CPU than an accelerator host has to spare. `python -m transfusion_jax.data resize` reads any split
through its reader, crops and resizes every image exactly as training would (`preprocess.resize`) and writes

  OUT/metadata.json          format, family, size, encoding, where it came from, and per split: example count,
                             shard files, images skipped as bad
  OUT/<split>.json           per example, in reading order: its original id (path relative to the dataset root,
                             or the TFDS key) and its raw label
  OUT/<split>-NNNNN.array_record   one record per image: msgpack {'id', 'image': JPEG or PNG bytes}

Raw labels are the source's own, before any task option: the Retina 0-4 grade, the CheXpert 1 / 0 / -1 / blank
(null) value of each of the 5 pathologies, a class index otherwise. So `retina_target`, `retina_threshold` and
`uncertainty_policy` still apply when training reads the copy (`config.data.name='resized'`,
`config.data.root=OUT`; `image_size=0` means the stored size). metadata.json is written last: a copy without it
is an interrupted write and is refused.
"""

import io
import json
import logging
import os

import grain
import numpy as np
from array_record.python import array_record_module
from flax import serialization

from transfusion_jax.data import preprocess, readers, tasks

FORMAT = "transfusion_jax.resized/1"
FAMILIES = ("retina", "chexpert", "classification")
ENCODINGS = ("jpeg", "png")


def raw_labels(source: readers.Source, family: str, rows: np.ndarray) -> list:
    """JSON-ready raw labels of `rows`. Retina sources must be built with retina_target='five_class' (their
    targets are then the grades); CheXpert sources keep `raw` (NaN = blank, written as null)."""
    if family == "chexpert":
        return [[None if np.isnan(v) else float(v) for v in source.raw[r]] for r in rows]
    if family == "retina" and source.task.num_outputs != 5:
        raise ValueError("build Retina sources with retina_target='five_class' to copy their grades")
    return [int(source.labels.targets[r]) for r in rows]


class _Encode:
    """grain map: a row -> (id, encoded image bytes, error message or '')."""

    def __init__(self, source, rows, size, resize_mode, encoding, quality, root):
        self.source, self.rows, self.size, self.resize_mode = source, rows, size, resize_mode
        self.encoding, self.quality, self.root = encoding, quality, root

    def original_id(self, index: int) -> str:
        described = self.source.describe(index)
        if self.root and os.path.isabs(described) and described.startswith(os.path.abspath(self.root) + os.sep):
            return os.path.relpath(described, self.root)
        return described

    def __call__(self, k: int) -> tuple[str, bytes, str]:
        index = int(self.rows[k])
        try:
            image = preprocess.resize(self.source.load(index, self.size), self.size, self.resize_mode)
        except readers.BadImageError as e:
            return self.original_id(index), b"", str(e)
        buffer = io.BytesIO()
        if self.encoding == "jpeg":
            image.save(buffer, format="JPEG", quality=self.quality, subsampling=0)  # 4:4:4: no chroma loss
        else:
            image.save(buffer, format="PNG")
        return self.original_id(index), buffer.getvalue(), ""


def write(
    out: str,
    splits: dict,
    *,
    family: str,
    label_names: tuple,
    task_name: str,
    size: int,
    resize_mode: str,
    encoding: str = "jpeg",
    quality: int = 95,
    workers: int = 4,
    on_bad_image: str = "raise",
    records_per_shard: int = 1024,
    provenance: dict | None = None,
) -> dict:
    """Writes the copy. `splits`: name -> (source, rows), rows the source indices to copy in order. Returns the
    metadata it wrote. Refuses a folder that already holds a finished copy."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if on_bad_image not in ("raise", "skip"):
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
    if size <= 0 or not 1 <= quality <= 100 or records_per_shard <= 0 or workers < 0:
        raise ValueError(
            f"need size > 0, quality in 1..100, records_per_shard > 0 and workers >= 0; got size={size}, "
            f"quality={quality}, records_per_shard={records_per_shard}, workers={workers}"
        )
    metadata_path = os.path.join(out, "metadata.json")
    if os.path.exists(metadata_path):
        raise FileExistsError(f"{out} already holds a resized copy ({metadata_path}); choose another folder")
    os.makedirs(out, exist_ok=True)
    root = (provenance or {}).get("root", "")
    written = {}
    for number, (name, (source, rows)) in enumerate(splits.items()):
        rows = np.asarray(rows)
        prefix = f"split{number}"
        encode = _Encode(source, rows, size, resize_mode, encoding, quality, root)
        stream = (
            grain.MapDataset.range(len(rows))
            .map(encode)
            .to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=4 * workers if workers else 0))
        )
        ids, kept, shards, skipped = [], [], [], {}
        writer = None
        for k, (original_id, data, error) in enumerate(stream):
            if error:
                if on_bad_image == "raise":
                    raise readers.BadImageError(f"{error}. Pass --on_bad_image skip to leave such images out.")
                logging.warning("skipping bad image: %s", error)
                skipped[original_id] = error
                continue
            if len(ids) % records_per_shard == 0:
                if writer is not None:
                    writer.close()
                shards.append(f"{prefix}-{len(shards):05d}.array_record")
                writer = array_record_module.ArrayRecordWriter(os.path.join(out, shards[-1]), "group_size:1")
            writer.write(serialization.msgpack_serialize({"id": original_id, "image": data}))
            ids.append(original_id)
            kept.append(rows[k])
        if writer is not None:
            writer.close()
        labels = raw_labels(source, family, np.asarray(kept, int))
        with open(os.path.join(out, f"{prefix}.json"), "w") as f:
            json.dump({"split": name, "ids": ids, "labels": labels}, f)
        written[name] = {
            "prefix": prefix,
            "num_examples": len(ids),
            "shards": shards,
            "skipped": skipped,
        }
        logging.info("%s: wrote %d images (%d skipped) to %s", name, len(ids), len(skipped), out)
    metadata = {
        "format": FORMAT,
        "family": family,
        "task_name": task_name,
        "label_names": list(label_names),
        "image_size": size,
        "resize_mode": resize_mode,
        "encoding": encoding,
        "quality": quality if encoding == "jpeg" else None,
        "provenance": provenance or {},
        "splits": written,
    }
    with open(metadata_path + ".tmp", "w") as f:
        json.dump(metadata, f, indent=2)
    os.replace(metadata_path + ".tmp", metadata_path)
    return metadata


def read_metadata(root: str) -> dict:
    path = os.path.join(root, "metadata.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: config.data.root must be a folder written by `python -m transfusion_jax.data "
            f"resize` (an interrupted write leaves no metadata.json: run it again into an empty folder)"
        )
    with open(path) as f:
        metadata = json.load(f)
    if metadata.get("format") != FORMAT:
        raise readers.DatasetFormatError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    return metadata


class ResizedSource(readers.Source):
    """A split of a resized copy; the task comes from the copy's family and this run's task options."""

    def __init__(self, root: str, split: str, c):
        metadata = read_metadata(root)
        if split not in metadata["splits"]:
            raise ValueError(f"resized copy {root} has splits {sorted(metadata['splits'])}, not {split!r}")
        entry = metadata["splits"][split]
        with open(os.path.join(root, f"{entry['prefix']}.json")) as f:
            index = json.load(f)
        self.root, self.split, self.family = root, split, metadata["family"]
        self.native_size = metadata["image_size"]
        self.ids = index["ids"]
        paths = [os.path.join(root, shard) for shard in entry["shards"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise readers.DatasetFormatError(f"resized copy {root} split {split!r} lacks {missing}; write it again")
        self._records = grain.sources.ArrayRecordDataSource(paths) if paths else []
        if len(self._records) != len(self.ids) or entry["num_examples"] != len(self.ids):
            raise readers.DatasetFormatError(
                f"resized copy {root} split {split!r} is damaged: {len(self._records)} records, "
                f"{len(self.ids)} ids, {entry['num_examples']} in metadata.json; write it again"
            )
        where = os.path.join(root, f"{entry['prefix']}.json")
        if not self.ids:
            raise readers.DatasetFormatError(f"resized copy {root} split {split!r} has no examples")
        if self.family == "retina":
            self.task = tasks.retina_task(c.retina_target, c.retina_threshold)
            self.labels = readers.softmax_labels(tasks.retina_targets(np.array(index["labels"]), self.task, where))
        elif self.family == "chexpert":
            if c.frontal_only and not metadata["provenance"].get("frontal_only"):
                raise ValueError(
                    f"resized copy {root} holds frontal and lateral views; write it with --frontal_only to train "
                    f"on frontal views only"
                )
            self.raw = np.array([[np.nan if v is None else v for v in row] for row in index["labels"]], np.float64)
            self.task = tasks.chexpert_task()
            self.labels = readers.sigmoid_labels(*tasks.apply_uncertainty_policy(self.raw, c.uncertainty_policy))
        else:
            names = tuple(metadata["label_names"])
            self.task = tasks.TaskInfo(metadata["task_name"], names, len(names), "softmax")
            self.labels = readers.softmax_labels(np.array(index["labels"]))

    def load(self, index, target_size):
        record = serialization.msgpack_restore(self._records[index])
        if record["id"] != self.ids[index]:
            raise readers.BadImageError(f"{self.describe(index)}: record holds {record['id']!r}; the copy is damaged")
        return readers.decode_image(record["image"], self.describe(index), target_size)

    def describe(self, index):
        return f"{self.root}:{self.split}[{index}] {self.ids[index]}"

    def example_id(self, index):
        """The original id (path relative to the dataset root, or TFDS key): the same example has the same id in
        every split of the copy, so the trainer's check that splits share no example still sees through slices."""
        return self.ids[index]
