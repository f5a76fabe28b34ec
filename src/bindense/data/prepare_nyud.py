"""Conversion of the official labelled NYUv2 file (``nyu_depth_v2_labeled.mat``) to the NYUD-MT layout.

The labelled file is MATLAB v7.3 (HDF5). MATLAB stores arrays column-major, so h5py sees every axis
reversed: ``images`` (N, 3, W, H) uint8, ``depths`` (N, W, H) float32 metres, ``labels`` (N, W, H) uint16
(894 classes, 0 = unlabelled). We transpose each sample back to (H, W[, 3]).

Derived targets (our choices, documented in docs/DATA.md#nyud-v2-multi-task):
- 40-class labels through Gupta et al.'s ``classMapping40.mat`` (``mapClass``: 894 -> 1..40; 0 stays 0),
- normals from the depth map: back-projection with the NYUv2 colour intrinsics, cross product of the
  central differences of the point cloud (after a small box blur of the depth), oriented to the camera,
- edges: boundaries of the 40-class label map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bindense.data.io import write_jpg, write_png
from bindense.data.pascal_context_mt import label_boundaries

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy of the 640x480 colour camera


def _load_any_mat(path: Path) -> dict[str, np.ndarray]:
    """Variables of a ``.mat`` file, MATLAB v5 (scipy) or v7.3 (h5py, axes reversed back)."""
    try:
        from scipy.io import loadmat

        return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except (NotImplementedError, ValueError):
        import h5py

        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}


def load_splits(path: str | Path) -> dict[str, list[int]]:
    """Official split (``splits.mat``: ``trainNdxs`` / ``testNdxs``, 1-based) as 0-based index lists."""
    mat = _load_any_mat(Path(path))
    return {"train": sorted(int(i) - 1 for i in np.ravel(mat["trainNdxs"])),
            "val": sorted(int(i) - 1 for i in np.ravel(mat["testNdxs"]))}  # fmt: skip


def load_class_map(path: str | Path) -> np.ndarray:
    """Lookup ``raw label (0..894) -> 40-class label (0..40)`` from ``classMapping40.mat`` (``mapClass``),
    a ``.npy`` or a text file of 894 integers (the mapping of classes 1..894)."""
    path = Path(path)
    if path.suffix == ".mat":
        mapping = np.ravel(_load_any_mat(path)["mapClass"])
    elif path.suffix == ".npy":
        mapping = np.ravel(np.load(path))
    else:
        mapping = np.asarray(path.read_text().split(), dtype=np.int64)
    mapping = np.asarray(mapping, dtype=np.int64)
    if mapping.min() < 0 or mapping.max() > 40:
        raise ValueError(f"class map '{path}' has values outside 0..40")
    return np.concatenate([[0], mapping]).astype(np.uint8)


def normals_from_depth(depth: np.ndarray, intrinsics: Sequence[float] = NYU_INTRINSICS) -> np.ndarray:
    """Surface normals (H, W, 3) in the contract frame (x right, y up, z to the viewer); 0 where depth is 0.

    ``intrinsics`` are given for 640x480 and scaled to the depth map size.
    """
    import cv2

    h, w = depth.shape
    fx, fy, cx, cy = intrinsics
    sx, sy = w / 640.0, h / 480.0
    fx, cx, fy, cy = fx * sx, cx * sx, fy * sy, cy * sy
    z = cv2.blur(depth.astype(np.float32), (5, 5))
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)
    du = np.zeros_like(pts)
    dv = np.zeros_like(pts)
    du[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dv[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(du, dv)
    n *= np.where((n * pts).sum(-1, keepdims=True) > 0, -1.0, 1.0)  # face the camera
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = (norm[..., 0] > 1e-12) & (depth > 0)
    n = np.where(valid[..., None], n / np.maximum(norm, 1e-12), 0.0)
    return np.stack([n[..., 0], -n[..., 1], -n[..., 2]], axis=-1).astype(np.float32)


def convert_labeled_mat(
    mat_path: str | Path,
    out: str | Path,
    splits: dict[str, list[int]],
    class_map: np.ndarray,
    normals: bool = True,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the NYUD-MT layout (images, segmentation, depth, normals, edge, gt_sets) from the labelled file.

    Args:
        splits: ``{"train": [0-based indices], "val": [...]}``.
        class_map: lookup from :func:`load_class_map`.
        normals: also derive normals from depth (else only the other targets).
        limit: convert at most this many samples per split (for quick checks).
    """
    import h5py

    out = Path(out)
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with h5py.File(mat_path, "r") as f:
        for key in ("images", "depths", "labels"):
            if key not in f:
                raise KeyError(f"'{mat_path}' has no dataset '{key}' (is it nyu_depth_v2_labeled.mat?)")
        n_total = f["images"].shape[0]
        todo = {s: idx[:limit] if limit else idx for s, idx in splits.items()}
        count, total = 0, sum(len(v) for v in todo.values())
        for split, indices in todo.items():
            names = []
            for i in indices:
                if not 0 <= i < n_total:
                    raise IndexError(f"split index {i + 1} is outside the {n_total} samples of '{mat_path}'")
                name = f"{i:04d}"
                image = np.ascontiguousarray(np.asarray(f["images"][i]).transpose(2, 1, 0))
                depth = np.ascontiguousarray(np.asarray(f["depths"][i], dtype=np.float32).T)
                raw = np.asarray(f["labels"][i]).T
                if raw.max(initial=0) >= len(class_map):
                    raise ValueError(f"sample {i + 1} of '{mat_path}' has label {raw.max()} > {len(class_map) - 1}")
                seg = class_map[raw]
                write_jpg(out / "images" / f"{name}.jpg", image, quality=95)
                write_png(out / "segmentation" / f"{name}.png", seg)
                np.save(out / "depth" / f"{name}.npy", depth)
                if normals:
                    np.save(out / "normals" / f"{name}.npy", normals_from_depth(depth))
                np.save(out / "edge" / f"{name}.npy", label_boundaries(seg))
                names.append(name)
                count += 1
                if progress is not None:
                    progress(count, total)
            (out / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return out
