"""Albumentations pipelines applied consistently to an image and all its dense targets.

A pipeline is described by a plain mapping (one Hydra node, ``train_aug`` / ``val_aug`` of a data config)
whose keys are applied in this fixed order:

=================  ===========================================================================================
``kb_crop``        ``[h, w]``: bottom-centre crop to at most h x w (KITTI "KB crop" 352x1216); no-op if smaller
``border_crop``    ``{box: [top, bottom, left, right], ref_size: [H, W]}``: fixed crop, box given at ``ref_size``
                   and scaled to the actual size (NYUv2 registration border 45:472, 43:608 at 480x640)
``long_side``      resize so that the long side equals this (aspect kept)
``short_side``     resize so that the short side equals this (aspect kept)
``scale``          ``[lo, hi]``: random rescale factor (train only)
``rotate``         max absolute rotation in degrees (train only)
``hflip``          probability of a horizontal flip (train only)
``crop``           ``[h, w]``: pad if needed (image 0, labels ignore, depth/normals invalid) then a random crop
                   (train) or a centre crop (eval)
``pad_to``         ``[h, w]``: pad bottom/right up to this size (eval of PASCAL-Context at 512x512)
``photometric``    ``{p, brightness, contrast, saturation, hue, gamma: [lo, hi], channel_scale: [lo, hi]}``
                   applied to the image only (train only)
=================  ===========================================================================================

Targets are the maps of the registered tasks (:mod:`bindense.tasks`), handled by their kind: every map uses
nearest interpolation; padding marks the maps of ``label`` tasks (``seg``, ``parts``) as ignore and every
other map as invalid (0); values are not rescaled (depth stays metric); maps of ``vector`` tasks (normals)
are re-oriented: a horizontal flip negates x, a rotation rotates (x, y). Normals use the camera frame x right,
y up, z towards the viewer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from bindense.tasks import get_task, task_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUG_KEYS = (
    "kb_crop",
    "border_crop",
    "long_side",
    "short_side",
    "scale",
    "rotate",
    "hflip",
    "crop",
    "pad_to",
    "photometric",
)
PHOTOMETRIC_KEYS = ("p", "brightness", "contrast", "saturation", "hue", "gamma", "channel_scale")


def _pair(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, (int, float)):
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"augmentation '{name}' must be [h, w], got {v!r}")
    return int(v[0]), int(v[1])


def kb_crop_box(height: int, width: int, size: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the bottom-centre KB crop of at most ``size`` (as in BTS for KITTI)."""
    h, w = min(int(size[0]), height), min(int(size[1]), width)
    top = height - h
    left = (width - w) // 2
    return top, top + h, left, left + w


def border_crop_box(height: int, width: int, box: Sequence[int], ref_size: Sequence[int]) -> tuple[int, ...]:
    """Scale a (top, bottom, left, right) box given at ``ref_size`` to an image of ``height x width``."""
    sy, sx = height / ref_size[0], width / ref_size[1]
    top, bottom, left, right = box
    return (round(top * sy), round(bottom * sy), round(left * sx), round(right * sx))


class DensePipeline:
    """Callable turning a raw sample (numpy) into tensors, with optional augmentation.

    Args:
        aug: the augmentation mapping (keys in :data:`AUG_KEYS`), ``None`` for no augmentation.
        train: random ops (scale, rotate, flip, random crop, photometric) only act when True;
            ``crop`` is a centre crop when False.
        ignore_index: value of ignored label pixels (padding of ``seg`` / ``parts``).
        normalize: ImageNet-normalise the image (else it is scaled to [0, 1]).

    Input sample: ``image`` uint8 (H, W, 3); ``seg``/``parts`` uint8 (H, W) with ``ignore_index``;
    ``depth`` float32 (H, W) metres; ``normals`` float32 (H, W, 3); ``edge``/``sal`` float32 (H, W).
    Output: the tensors of the data contract (see :mod:`bindense.data`).
    """

    def __init__(
        self,
        aug: Mapping[str, Any] | None = None,
        train: bool = False,
        ignore_index: int = 255,
        normalize: bool = True,
    ) -> None:
        spec = dict(aug or {})
        unknown = set(spec) - set(AUG_KEYS)
        if unknown:
            raise ValueError(f"unknown augmentation keys {sorted(unknown)}; known: {list(AUG_KEYS)}")
        self.spec = spec
        self.train = train
        self.ignore_index = ignore_index
        self.normalize = normalize
        self.mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
        self.std = np.asarray(IMAGENET_STD, np.float32) * 255.0
        self.compose = A.Compose(
            self._build_ops(spec, train),
            additional_targets={t: "mask" for t in task_names()},
            save_applied_params=True,
            is_check_shapes=False,  # the datasets check shapes themselves and name the files
        )
        self._seed: int | None = None

    @staticmethod
    def _build_ops(spec: Mapping[str, Any], train: bool) -> list[A.BasicTransform]:
        ops: list[A.BasicTransform] = []
        nearest = cv2.INTER_NEAREST
        if spec.get("long_side"):
            ops.append(A.LongestMaxSize(max_size=int(spec["long_side"]), mask_interpolation=nearest))
        if spec.get("short_side"):
            ops.append(A.SmallestMaxSize(max_size=int(spec["short_side"]), mask_interpolation=nearest))
        if train and spec.get("scale"):
            lo, hi = (float(x) for x in spec["scale"])
            if (lo, hi) != (1.0, 1.0):
                ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), mask_interpolation=nearest, p=1.0))
        if train and spec.get("rotate"):
            deg = float(spec["rotate"])
            ops.append(
                A.Rotate(
                    limit=(-deg, deg),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                    mask_interpolation=nearest,
                    p=1.0,
                )
            )
        if train and spec.get("hflip"):
            ops.append(A.HorizontalFlip(p=float(spec["hflip"])))
        if spec.get("crop"):
            h, w = _pair(spec["crop"], "crop")
            ops.append(
                A.PadIfNeeded(
                    min_height=h,
                    min_width=w,
                    position="random" if train else "center",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                )
            )
            ops.append(A.RandomCrop(h, w) if train else A.CenterCrop(h, w))
        if spec.get("pad_to"):
            h, w = _pair(spec["pad_to"], "pad_to")
            ops.append(
                A.PadIfNeeded(
                    min_height=h,
                    min_width=w,
                    position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                )
            )
        photo = spec.get("photometric")
        if train and photo:
            ops.extend(_photometric(photo))
        return ops

    def _reseed(self) -> None:
        """Seed albumentations from torch so DataLoader workers (and epochs) draw different augmentations."""
        seed = torch.initial_seed() % (2**32)
        if seed != self._seed:
            self.compose.set_random_seed(seed)
            self._seed = seed

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Augment and convert a raw sample; keys other than image and the task maps pass through."""
        sample = dict(sample)
        image = sample.pop("image")
        maps = {k: sample.pop(k) for k in task_names() if k in sample}
        image, maps = self._fixed_crops(image, maps)
        if self.compose.transforms:
            self._reseed()
            encoded = {k: self._encode(k, v) for k, v in maps.items()}
            out = self.compose(image=image, **encoded)
            image = out["image"]
            maps = {k: self._decode(k, out[k]) for k in maps}
            for k in maps:
                if get_task(k).vector:
                    maps[k] = _reorient_normals(maps[k], out.get("applied_transforms", []))
        result = self.to_tensors(image, maps)
        result.update(sample)
        return result

    def _fixed_crops(self, image: np.ndarray, maps: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        h, w = image.shape[:2]
        box = None
        if self.spec.get("kb_crop"):
            box = kb_crop_box(h, w, _pair(self.spec["kb_crop"], "kb_crop"))
        if self.spec.get("border_crop"):
            bc = self.spec["border_crop"]
            t, b, lft, r = border_crop_box(h, w, bc["box"], bc.get("ref_size", (h, w)))
            if box is not None:  # compose with the KB crop
                t, b, lft, r = box[0] + t, box[0] + b, box[2] + lft, box[2] + r
            box = (t, b, lft, r)
        if box is None:
            return image, maps
        t, b, lft, r = box
        return image[t:b, lft:r], {k: v[t:b, lft:r] for k, v in maps.items()}

    def _encode(self, key: str, arr: np.ndarray) -> np.ndarray:
        """Labels are shifted by +1 (ignore -> 0) so that a single fill value 0 means ignore / invalid."""
        if get_task(key).kind == "label":
            enc = arr.astype(np.uint16) + 1
            enc[arr == self.ignore_index] = 0
            return enc
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _decode(self, key: str, arr: np.ndarray) -> np.ndarray:
        if get_task(key).kind == "label":
            out = arr.astype(np.int64) - 1
            out[arr == 0] = self.ignore_index
            return out
        return arr

    def to_tensors(self, image: np.ndarray, maps: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Convert to the contract: CHW float image, int64 labels, (C, H, W) float maps ((H, W, C) -> (C, H, W))."""
        img = image.astype(np.float32)
        img = (img - self.mean) / self.std if self.normalize else img / 255.0
        out = {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))}
        for k, v in maps.items():
            if get_task(k).kind == "label":
                out[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64))
            elif v.ndim == 3:
                out[k] = torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1), dtype=np.float32))
            else:
                out[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None]
        return out


def _photometric(photo: Mapping[str, Any]) -> list[A.BasicTransform]:
    unknown = set(photo) - set(PHOTOMETRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown photometric keys {sorted(unknown)}; known: {list(PHOTOMETRIC_KEYS)}")
    inner: list[A.BasicTransform] = []
    b, c, s, h = (float(photo.get(k, 0.0) or 0.0) for k in ("brightness", "contrast", "saturation", "hue"))
    if b or c or s or h:
        inner.append(
            A.ColorJitter(
                brightness=(1 - b, 1 + b), contrast=(1 - c, 1 + c), saturation=(1 - s, 1 + s), hue=(-h, h), p=1.0
            )
        )
    if photo.get("gamma"):
        lo, hi = photo["gamma"]
        inner.append(A.RandomGamma(gamma_limit=(100 * float(lo), 100 * float(hi)), p=1.0))
    if photo.get("channel_scale"):
        lo, hi = photo["channel_scale"]
        inner.append(A.MultiplicativeNoise(multiplier=(float(lo), float(hi)), per_channel=True, p=1.0))
    if not inner:
        return []
    return [A.Sequential(inner, p=float(photo.get("p", 0.5)))]


def _reorient_normals(normals: np.ndarray, applied: Sequence[tuple[str, dict]]) -> np.ndarray:
    """Apply the geometric effect of the applied transforms to normal vectors (x right, y up, z to viewer)."""
    n = normals
    for name, params in applied:
        if name == "HorizontalFlip":
            n = n.copy()
            n[..., 0] = -n[..., 0]
        elif name == "VerticalFlip":
            n = n.copy()
            n[..., 1] = -n[..., 1]
        elif "matrix" in params and name in ("Rotate", "SafeRotate", "Affine", "ShiftScaleRotate"):
            m = np.asarray(params["matrix"], dtype=np.float64)[:2, :2]
            det = abs(np.linalg.det(m))
            if det > 0:
                m = m / math.sqrt(det)
            # image coordinates have y down: express (x, y_up) as (x, -y), rotate, then flip back
            x, y = n[..., 0], -n[..., 1]
            nx = m[0, 0] * x + m[0, 1] * y
            ny = m[1, 0] * x + m[1, 1] * y
            n = np.stack([nx, -ny, n[..., 2]], axis=-1).astype(np.float32)
    return n
