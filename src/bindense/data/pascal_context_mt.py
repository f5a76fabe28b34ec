"""PASCAL-Context multi-task (PASCAL_MT layout of ASTMT / MTI-Net / InvPT).

Tasks: ``seg`` (21 VOC classes, 255 ignored), ``parts`` (human parts: 0 background + 6 parts, from the
PASCAL-Part ``.mat`` annotations of persons), ``sal`` (distilled saliency PNG > 0.5), ``normals``
(distilled normals PNG, ``2 v / 255 - 1``, kept only on the PASCAL-Context classes that also exist in NYU,
0 elsewhere), ``edge`` (boundaries of the PASCAL-Context ``LabelMap``).

Our choices where the reference code depends on other libraries: edges are the pixels whose LabelMap
value differs from the right or lower neighbour (a 1-pixel boundary, the role of Laplacian + thinning);
images without a person get an all-background parts map (as the reference loader), or an all-ignore map
with ``parts_ignore_no_person=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.base import DenseDataset, Record, normalize_normals
from bindense.data.errors import CorruptFileError, LabelRangeError, ShapeMismatchError
from bindense.data.io import (
    apply_lut,
    label_lut,
    read_mat,
    read_png_array,
    read_rgb,
    write_jpg,
    write_png,
    write_split_lists,
)
from bindense.data.scene import CABINET, CLASS_NAMES
from bindense.data.voc import VOC_CLASSES, resolve_split

PERSON_CLASS = 15
# PASCAL-Part person part names -> 6 coarse parts (1 head, 2 torso, 3 upper arm, 4 lower arm, 5 upper leg,
# 6 lower leg), the grouping of the multi-task protocol.
HUMAN_PARTS_6 = {
    **dict.fromkeys(["hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"], 1),
    **dict.fromkeys(["neck", "torso"], 2),
    **dict.fromkeys(["luarm", "ruarm"], 3),
    **dict.fromkeys(["llarm", "rlarm", "lhand", "rhand"], 4),
    **dict.fromkeys(["luleg", "ruleg"], 5),
    **dict.fromkeys(["llleg", "rlleg", "lfoot", "rfoot"], 6),
}

LAYOUT = """\
PASCAL_MT/                                  <- data.root
  JPEGImages/<id>.jpg
  semseg/VOC12/<id>.png | semseg/pascal-context/<id>.png   (0..20, 255 = ignored)
  human_parts/<id>.mat                      (PASCAL-Part 'anno' struct: objects{class_ind, mask, parts})
  pascal-context/trainval/<id>.mat          ('LabelMap': PASCAL-Context label map, for edges / normals)
  normals_distill/<id>.png                  (RGB, n = 2 v / 255 - 1)
  sal_distill/<id>.png                      (0..255, salient if > 127)
  json/nyu_classes.json, json/context_classes.json   (normals: classes shared with NYU)
  ImageSets/Context/train.txt, val.txt      (4,998 / 5,105 ids)"""

HINT = """\
Download and unpack PASCAL_MT.tgz, the archive of the ASTMT / MTI-Net multi-task benchmark
(https://github.com/facebookresearch/astmt; also used by MTI-Net, ATRC and InvPT). No conversion is needed.
Synthetic stand-in: python scripts/make_synthetic.py --layout pascal_context_mt --out DIR"""


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """1-pixel boundary map (float32 0/1): pixels differing from their right or lower neighbour."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge.astype(np.float32)


def _as_list(x) -> list:
    """MATLAB struct arrays load as a single object, an array of objects or an empty array."""
    if x is None:
        return []
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    return [x]


class PascalContextMTDataset(DenseDataset):
    """PASCAL-Context multi-task dataset.

    Args:
        root: the ``PASCAL_MT`` directory.
        split: ``train`` / ``val`` (``ImageSets/Context/<split>.txt``) or a path to an id list.
        tasks: any of ``seg, parts, sal, normals, edge``.
        num_classes: 21; num_parts: 7 (background + 6 parts).
        parts_ignore_no_person: all-ignore parts map for images without a person (default: background).
    """

    NAME = "PASCAL-Context MT"
    LAYOUT = LAYOUT
    HINT = HINT
    SUPPORTED_TASKS = ("seg", "parts", "sal", "normals", "edge")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "parts", "sal", "normals", "edge"),
        transform: Callable | None = None,
        num_classes: int = 21,
        num_parts: int = 7,
        ignore_index: int = 255,
        parts_ignore_no_person: bool = False,
    ) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        split_file = resolve_split(self.root, split, "ImageSets/Context")
        ids = self._read_split(split_file)
        voc_dir, ctx_dir = self.root / "semseg" / "VOC12", self.root / "semseg" / "pascal-context"
        voc_ids = {Path(f).stem for f in os.listdir(voc_dir)} if voc_dir.is_dir() else set()
        self.records = []
        for i in ids:
            rec: Record = {"name": i, "image": str(self.root / "JPEGImages" / f"{i}.jpg")}
            if "seg" in self.tasks:
                rec["seg"] = str((voc_dir if i in voc_ids else ctx_dir) / f"{i}.png")
            if "parts" in self.tasks:
                rec["parts"] = str(self.root / "human_parts" / f"{i}.mat")
            if "sal" in self.tasks:
                rec["sal"] = str(self.root / "sal_distill" / f"{i}.png")
            if "normals" in self.tasks:
                rec["normals"] = str(self.root / "normals_distill" / f"{i}.png")
            if "edge" in self.tasks or "normals" in self.tasks:
                rec["context"] = str(self.root / "pascal-context" / "trainval" / f"{i}.mat")
            self.records.append(rec)
        self._check_records(str(split_file))
        self.seg_lut = label_lut({**{c: c for c in range(num_classes)}, 255: ignore_index})
        self.num_parts = num_parts
        self.parts_ignore_no_person = parts_ignore_no_person
        self.normals_valid = self._normals_classes() if "normals" in self.tasks else None
        self.class_names = VOC_CLASSES[:num_classes]

    def _normals_classes(self) -> np.ndarray:
        """PASCAL-Context label ids whose class also exists in NYU (plus tvmonitor), as in the protocol."""
        nyu_p, ctx_p = self.root / "json" / "nyu_classes.json", self.root / "json" / "context_classes.json"
        for p in (nyu_p, ctx_p):
            if not p.is_file():
                raise self._error(f"'{p}' (needed to mask the distilled normals) does not exist")
        try:
            nyu = json.loads(nyu_p.read_text())
            ctx = json.loads(ctx_p.read_text())
        except json.JSONDecodeError as e:
            raise CorruptFileError(f"cannot parse class list json under '{self.root / 'json'}': {e}") from e
        valid = [ctx[c] for c in nyu if c in ctx and c != "unknown"]
        if "tvmonitor" in ctx:
            valid.append(ctx["tvmonitor"])
        return np.asarray(sorted(set(int(v) for v in valid)), dtype=np.int64)

    def _label_map(self, record: Record) -> np.ndarray:
        mat = read_mat(record["context"])
        if "LabelMap" not in mat:
            raise CorruptFileError(f"'{record['context']}' has no 'LabelMap' variable")
        return np.asarray(mat["LabelMap"])

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        if task == "seg":
            return apply_lut(read_png_array(record["seg"]), self.seg_lut, record["seg"], "PASCAL-Context semseg")
        if task == "sal":
            return (read_png_array(record["sal"]) > 127).astype(np.float32)
        if task == "edge":
            lab = self._label_map(record)
            if lab.ndim != 2:
                raise ShapeMismatchError(f"LabelMap of '{record['context']}' has shape {lab.shape}")
            return label_boundaries(lab)
        if task == "normals":
            rgb = read_rgb(record["normals"]).astype(np.float32)
            n = 2.0 * rgb / 255.0 - 1.0
            lab = self._label_map(record)
            if lab.shape != n.shape[:2]:
                raise ShapeMismatchError(
                    f"size mismatch: '{record['normals']}' is {n.shape[:2]} but the LabelMap of "
                    f"'{record['context']}' is {lab.shape}"
                )
            n[~np.isin(lab, self.normals_valid)] = 0.0
            return normalize_normals(n)
        if task == "parts":
            return self._parts(record, image_shape)
        raise KeyError(task)

    def _parts(self, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        path = record["parts"]
        mat = read_mat(path)
        if "anno" not in mat:
            raise CorruptFileError(f"'{path}' has no 'anno' struct (PASCAL-Part annotation expected)")
        target = np.zeros(image_shape[:2], dtype=np.uint8)
        has_person = False
        try:
            for obj in _as_list(getattr(mat["anno"], "objects", None)):
                if int(obj.class_ind) != PERSON_CLASS:
                    continue
                parts = _as_list(obj.parts)
                if not parts:
                    continue
                has_person = True
                for part in parts:
                    name = str(part.part_name)
                    if name not in HUMAN_PARTS_6:
                        raise LabelRangeError(f"human parts '{path}': unknown part name {name!r}")
                    pid = HUMAN_PARTS_6[name]
                    if pid >= self.num_parts:
                        raise LabelRangeError(f"human parts '{path}': part {name!r} -> {pid} >= num_parts")
                    mask = np.asarray(part.mask).astype(bool)
                    if mask.shape != target.shape:
                        raise ShapeMismatchError(
                            f"size mismatch: part mask in '{path}' is {mask.shape}, image is {target.shape}"
                        )
                    target[mask] = pid
        except AttributeError as e:
            raise CorruptFileError(f"'{path}' is not a PASCAL-Part annotation: {e}") from e
        if not has_person and self.parts_ignore_no_person:
            target[:] = self.ignore_index
        return target


# --------------------------------------------------------------------------------- synthetic scenes in this format
#: the parts a synthetic "person" (a cabinet) is cut into, top to bottom
SYNTHETIC_PERSON_PARTS = ["head", "torso", "luarm", "llarm", "luleg", "llleg"]


def _synthetic_objects(sample: Mapping[str, Any]) -> np.ndarray:
    """The PASCAL-Part ``objects`` struct of a rendered scene: cabinets play the person (class 15), split into
    six horizontal bands of parts; every other object is listed without parts."""
    obj_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    part_dtype = [("part_name", "O"), ("mask", "O")]
    objects = []
    inst = sample["instance"]
    for i in np.unique(inst[sample["sal"] > 0]):
        mask = inst == i
        cls = int(sample["seg"][mask][0])
        parts = np.zeros((1, 0), dtype=part_dtype)
        if cls == CABINET:
            rows = np.flatnonzero(mask.any(axis=1))
            bands = np.array_split(np.arange(rows.min(), rows.max() + 1), len(SYNTHETIC_PERSON_PARTS))
            parts = np.zeros((1, len(bands)), dtype=part_dtype)
            for j, (pname, band) in enumerate(zip(SYNTHETIC_PERSON_PARTS, bands)):
                pm = np.zeros_like(mask)
                pm[band] = mask[band]
                parts[0, j] = (pname, pm.astype(np.uint8))
        objects.append(("person" if cls == CABINET else CLASS_NAMES[cls], PERSON_CLASS if cls == CABINET else 100 + cls,
                        mask.astype(np.uint8), parts))  # fmt: skip
    objs = np.zeros((1, len(objects)), dtype=obj_dtype)
    for j, o in enumerate(objects):
        objs[0, j] = o
    return objs


def write_synthetic_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene in the PASCAL_MT layout (semseg, distilled saliency and normals, the
    PASCAL-Context ``LabelMap``, PASCAL-Part persons); returns its stem."""
    from scipy.io import savemat

    name = f"{split}_{index:05d}"
    write_jpg(out / "JPEGImages" / f"{name}.jpg", sample["image"])
    write_png(out / "semseg" / "pascal-context" / f"{name}.png", sample["seg"])
    write_png(out / "sal_distill" / f"{name}.png", sample["sal"] * 255)
    nrm = np.clip((sample["normals"] + 1.0) / 2.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    write_png(out / "normals_distill" / f"{name}.png", nrm)
    # PASCAL-Context LabelMap: synthetic class c -> context id c + 1
    (out / "pascal-context" / "trainval").mkdir(parents=True, exist_ok=True)
    label_map = {"LabelMap": (sample["seg"] + 1).astype(np.uint16)}
    savemat(out / "pascal-context" / "trainval" / f"{name}.mat", label_map, do_compression=True)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (name, _synthetic_objects(sample))
    (out / "human_parts").mkdir(parents=True, exist_ok=True)
    savemat(out / "human_parts" / f"{name}.mat", {"anno": anno}, do_compression=True)
    return name


def write_synthetic_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """``ImageSets/Context/<split>.txt`` and the class lists of ``json/`` (context ids; the classes with normals)."""
    write_split_lists(out / "ImageSets" / "Context", entries)
    (out / "json").mkdir(parents=True, exist_ok=True)
    ctx = {n: i + 1 for i, n in enumerate(CLASS_NAMES)}
    ctx["tvmonitor"] = len(CLASS_NAMES) + 1
    (out / "json" / "context_classes.json").write_text(json.dumps(ctx))
    nyu_like = [n for n in CLASS_NAMES if n not in ("ball", "column")] + ["unknown"]  # classes with normals
    (out / "json" / "nyu_classes.json").write_text(json.dumps(nyu_like))
