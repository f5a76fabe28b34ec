"""Synthetic indoor scenes: a small numpy ray caster and writers for the real on-disk layouts.

Each scene is a box-shaped room (floor, walls, ceiling) seen by a pinhole camera (NYUv2-like field of
view), with decals (door, paintings, rug) and a few primitives of distinct classes (tables, cabinets,
sofas, crates, balls, bins, columns), procedural textures, a point light with cast shadows, a fill
light and sensor noise. Every scene yields consistent

- ``image`` uint8 (H, W, 3), ``seg`` uint8 (H, W) in ``0..NUM_CLASSES-1``,
- ``depth`` float32 (H, W) z-depth in metres (within (0.5, 10)),
- ``normals`` float32 (H, W, 3), unit, camera frame x right, y up, z towards the viewer,
- ``edge`` uint8 (H, W): boundaries between surfaces/objects, ``sal`` uint8 (H, W): the objects.

Rendering is deterministic from ``(seed, split, index)``, independent of the number of worker processes.
:func:`write_synthetic` writes a dataset in one of the real layouts (NYUD-MT, ADE20K, VOC, BTS NYUv2,
BTS KITTI, PASCAL-Context MT) so the real loaders read it; :func:`ensure_synthetic` keeps a cache.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.io import write_jpg, write_png

CLASS_NAMES = (
    "floor", "wall", "ceiling", "door", "painting", "rug",
    "table", "cabinet", "sofa", "crate", "ball", "bin", "column",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
FLOOR, WALL, CEILING, DOOR, PAINTING, RUG, TABLE, CABINET, SOFA, CRATE, BALL, BIN, COLUMN = range(NUM_CLASSES)
SALIENT_MIN_CLASS = TABLE  # classes >= TABLE are objects (salient)
LAYOUTS = ("nyud_mt", "ade20k", "voc", "bts_nyu", "bts_kitti", "pascal_context_mt")
LAYOUT_ALIASES = {"bts": "bts_nyu", "nyu": "bts_nyu", "kitti": "bts_kitti", "pascal": "pascal_context_mt"}
GENERATOR_VERSION = 1
MIN_DEPTH, MAX_DEPTH = 0.5, 9.9
_SPLITS = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------------------------------------
# scene description
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Material:
    """Procedural texture: a kind and its parameters (colours in [0, 1])."""

    kind: str
    color: np.ndarray
    color2: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    phase: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class Surface:
    """A ray-castable surface: room plane, box, sphere or vertical cylinder."""

    kind: str  # "plane" | "box" | "sphere" | "cylinder"
    cls: int
    inst: int
    mat: Material
    pos: np.ndarray  # plane: point; box: centre; sphere: centre; cylinder: base centre
    dims: np.ndarray  # plane: normal; box: half extents; sphere: (r,); cylinder: (r, height)
    yaw: float = 0.0


@dataclass
class Decal:
    """A textured rectangle on a room plane (changes class/instance, not geometry)."""

    plane: int  # index of the plane surface
    cls: int
    inst: int
    mat: Material
    rect: tuple[float, float, float, float]  # (u0, u1, v0, v1) in the plane's (u, v) coordinates


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _rot_y(yaw: float) -> np.ndarray:
    """Local -> world rotation about the vertical axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _plane_uv(plane_normal: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane coordinates of points ``p`` (M, 3) of an axis-aligned plane: (u, v) with v vertical on walls."""
    ax = int(np.argmax(np.abs(plane_normal)))
    if ax == 1:  # floor / ceiling
        return p[:, 0], p[:, 2]
    if ax == 0:  # side walls
        return p[:, 2], p[:, 1]
    return p[:, 0], p[:, 1]  # back / front wall


# ----------------------------------------------------------------------------------------------------------
# ray casting (vectorised over rays; origins are (3,) or (N, 3))
# ----------------------------------------------------------------------------------------------------------
_EPS = 1e-5


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-9, 1e-9, d)


def _hit_plane(o: np.ndarray, d: np.ndarray, s: Surface) -> tuple[np.ndarray, np.ndarray]:
    ax = int(np.argmax(np.abs(s.dims)))
    oa = o[..., ax]
    t = (s.pos[ax] - oa) / _safe(d[:, ax])
    t = np.where(t > _EPS, t, np.inf)
    n = np.broadcast_to(s.dims, d.shape)
    return t, n


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _near_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Rays (lines) passing within ``radius`` of ``centre``: a cheap bounding-volume cull."""
    oc = o - centre
    b = _dot(d, oc)
    return b * b - _dot(d, d) * (_dot(oc, oc) - radius * radius) > 0


def _hit_box(o: np.ndarray, d: np.ndarray, s: Surface) -> tuple[np.ndarray, np.ndarray]:
    t = np.full(len(d), np.inf)
    n = np.zeros_like(d)
    cand = _near_sphere(o, d, s.pos, float(np.linalg.norm(s.dims)))
    if not cand.any():
        return t, n
    r = _rot_y(s.yaw)
    ol = ((o[cand] if o.ndim == 2 else o) - s.pos) @ r
    dl = d[cand] @ r
    inv = 1.0 / _safe(dl)
    t1 = (-s.dims - ol) * inv
    t2 = (s.dims - ol) * inv
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    tn = np.maximum(np.maximum(tmin[:, 0], tmin[:, 1]), tmin[:, 2])
    tf = np.minimum(np.minimum(tmax[:, 0], tmax[:, 1]), tmax[:, 2])
    hit = (tf >= tn) & (tn > _EPS)
    axis = np.where(tmin[:, 0] == tn, 0, np.where(tmin[:, 1] == tn, 1, 2))
    nl = np.zeros_like(dl)
    rows = np.arange(len(dl))
    nl[rows, axis] = -np.sign(dl[rows, axis])
    t[cand] = np.where(hit, tn, np.inf)
    n[cand] = nl @ r.T
    return t, n


def _hit_sphere(o: np.ndarray, d: np.ndarray, s: Surface) -> tuple[np.ndarray, np.ndarray]:
    oc = o - s.pos
    a = _dot(d, d)
    b = _dot(d, oc)
    c = _dot(oc, oc) - s.dims[0] ** 2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - sq) / a
    t = np.where((disc > 0) & (t > _EPS), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, (p - s.pos) / s.dims[0]


def _hit_cylinder(o: np.ndarray, d: np.ndarray, s: Surface) -> tuple[np.ndarray, np.ndarray]:
    r, h = s.dims[0], s.dims[1]
    ox, oy, oz = (o[..., i] - s.pos[i] for i in range(3))
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = _safe(dx * dx + dz * dz)
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    ys = oy + ts * dy
    side = (disc > 0) & (ts > _EPS) & (ys >= 0) & (ys <= h)
    ts = np.where(side, ts, np.inf)
    tt = (h - oy) / _safe(dy)
    xt, zt = ox + tt * dx, oz + tt * dz
    top = (tt > _EPS) & (xt * xt + zt * zt <= r * r)
    tt = np.where(top, tt, np.inf)
    t = np.minimum(ts, tt)
    use_top = tt < ts
    tf = np.where(np.isfinite(t), t, 0.0)
    nx, nz = (ox + tf * dx) / r, (oz + tf * dz) / r
    n = np.stack([np.where(use_top, 0.0, nx), np.where(use_top, 1.0, 0.0), np.where(use_top, 0.0, nz)], axis=1)
    return t, n


_HIT: dict[str, Callable] = {"plane": _hit_plane, "box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


# ----------------------------------------------------------------------------------------------------------
# textures
# ----------------------------------------------------------------------------------------------------------
class _Noise:
    """Periodic value noise on a random grid (smooth, cheap, deterministic from the scene RNG)."""

    def __init__(self, rng: np.random.Generator, size: int = 64) -> None:
        self.grid = rng.random((size, size)).astype(np.float64)
        self.size = size

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        g, n = self.grid, self.size
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        i0, j0 = x0.astype(np.int64) % n, y0.astype(np.int64) % n
        i1, j1 = (i0 + 1) % n, (j0 + 1) % n
        top = g[j0, i0] * (1 - fx) + g[j0, i1] * fx
        bot = g[j1, i0] * (1 - fx) + g[j1, i1] * fx
        return top * (1 - fy) + bot * fy

    def fbm(self, x: np.ndarray, y: np.ndarray, octaves: int = 3) -> np.ndarray:
        out, amp, tot = 0.0, 1.0, 0.0
        for k in range(octaves):
            out = out + amp * self(x * 2**k + 17.3 * k, y * 2**k + 5.1 * k)
            tot += amp
            amp *= 0.5
        return out / tot


def _hash01(i: np.ndarray, salt: float) -> np.ndarray:
    return np.modf(np.sin(i * 12.9898 + salt * 78.233) * 43758.5453)[0] % 1.0


def _albedo(mat: Material, u: np.ndarray, v: np.ndarray, w: np.ndarray, noise: _Noise) -> np.ndarray:
    """Albedo (M, 3) of ``mat`` at texture coordinates (u, v, w) in metres."""
    c1, c2, sc, ph = mat.color, mat.color2, mat.scale, mat.phase
    k = mat.kind
    if k == "planks":  # wooden floor: planks along u
        plank = np.floor(v / sc + ph)
        tint = 0.82 + 0.3 * _hash01(plank, ph)
        grain = 0.07 * np.sin(2 * np.pi * (u * 1.3 + 2.5 * noise(u * 0.7, v * 6.0 + plank)))
        gap = (np.modf(v / sc + ph)[0] % 1.0) < 0.06
        val = (tint + grain)[:, None] * c1
        return np.where(gap[:, None], c1 * 0.45, val)
    if k == "tiles":
        fu, fv = (u / sc + ph) % 1.0, (v / sc + ph) % 1.0
        checker = (np.floor(u / sc + ph) + np.floor(v / sc + ph)) % 2
        grout = (fu < 0.05) | (fv < 0.05)
        val = np.where(checker[:, None] > 0, c1, c2) * (0.95 + 0.1 * noise(u * 4, v * 4))[:, None]
        return np.where(grout[:, None], c1 * 0.55, val)
    if k == "paint":
        return c1 * (0.95 + 0.1 * noise.fbm(u * 2 + ph, v * 2))[:, None]
    if k == "door":
        u0, u1, v0, v1 = mat.extra["rect"]
        lu, lv = (u - u0) / (u1 - u0), (v - v0) / (v1 - v0)
        border = (lu < 0.06) | (lu > 0.94) | (lv > 0.97)
        panel = (np.abs(lu - 0.5) < 0.32) & ((np.abs(lv - 0.72) < 0.2) | (np.abs(lv - 0.28) < 0.2))
        groove = panel & ~((np.abs(lu - 0.5) < 0.29) & ((np.abs(lv - 0.72) < 0.18) | (np.abs(lv - 0.28) < 0.18)))
        knob = ((lu - 0.85) ** 2 + ((lv - 0.48) * (v1 - v0) / (u1 - u0)) ** 2) < 0.0035
        val = c1 * (0.96 + 0.08 * noise(u * 8, v * 3))[:, None]
        val = np.where(groove[:, None], val * 0.7, val)
        val = np.where(border[:, None], c2, val)
        return np.where(knob[:, None], np.array([0.85, 0.75, 0.35]), val)
    if k == "painting":
        u0, u1, v0, v1 = mat.extra["rect"]
        lu, lv = (u - u0) / (u1 - u0), (v - v0) / (v1 - v0)
        frame = (lu < 0.07) | (lu > 0.93) | (lv < 0.08) | (lv > 0.92)
        cols = mat.extra["palette"]
        f = mat.extra["freqs"]
        w1 = 0.5 + 0.5 * np.sin(f[0] * lu + f[1] * lv + ph)
        w2 = 0.5 + 0.5 * np.sin(f[2] * lu - f[3] * lv + 2 * ph)
        val = cols[0] * (w1 * w2)[:, None] + cols[1] * ((1 - w1) * w2)[:, None] + cols[2] * (1 - w2)[:, None]
        return np.where(frame[:, None], c2, val)
    if k == "rug":
        u0, u1, v0, v1 = mat.extra["rect"]
        lu, lv = (u - u0) / (u1 - u0), (v - v0) / (v1 - v0)
        border = (lu < 0.08) | (lu > 0.92) | (lv < 0.1) | (lv > 0.9)
        if mat.extra["pattern"] == 0:
            pat = (np.abs(((lu - 0.5) * 6) % 2 - 1) + np.abs(((lv - 0.5) * 4) % 2 - 1)) < 0.8
        else:
            pat = (np.floor(lu * 10) % 2) == 0
        val = np.where(pat[:, None], c1, c1 * 0.55 + 0.1)
        val = val * (0.93 + 0.14 * noise(u * 20, v * 20))[:, None]
        return np.where(border[:, None], c2, val)
    if k == "wood":
        ring = np.sin(2 * np.pi * (u * sc + 1.5 * noise(u * 1.5 + ph, w * 1.5)))
        return c1 * (0.9 + 0.1 * ring + 0.05 * noise(v * 30, w * 30))[:, None]
    if k == "drawers":
        groove = (np.modf((v + ph) / sc)[0] % 1.0) < 0.06
        handle = (
            ((np.modf((v + ph) / sc)[0] % 1.0) > 0.45) & ((np.modf((v + ph) / sc)[0] % 1.0) < 0.55) & (np.abs(u) < 0.08)
        )
        val = c1 * (0.96 + 0.06 * noise(u * 5, v * 5))[:, None]
        val = np.where(groove[:, None], val * 0.6, val)
        return np.where(handle[:, None], c2, val)
    if k == "fabric":
        weave = 0.04 * np.sin(u * 160) * np.sin(v * 160)
        return c1 * (0.9 + 0.15 * noise.fbm(u * 6 + ph, v * 6 + w * 3) + weave)[:, None]
    if k == "cardboard":
        tape = np.abs(u) < 0.06 * sc
        val = c1 * (0.92 + 0.12 * noise(u * 10, v * 10 + w * 10))[:, None]
        return np.where(tape[:, None], c2, val)
    if k == "ball":
        band = np.abs(v) < 0.3 * sc
        return np.where(band[:, None], c2, c1) * (0.97 + 0.03 * noise(u * 20, w * 20))[:, None]
    if k == "bands":
        band = (np.modf(v / sc + ph)[0] % 1.0) < 0.18
        val = c1 * (0.93 + 0.1 * noise(np.arctan2(u, w) * 3, v * 10))[:, None]
        return np.where(band[:, None], c2, val)
    if k == "stone":
        return c1 * (0.82 + 0.3 * noise.fbm(np.arctan2(u, w) * 4 + ph, v * 4, octaves=4))[:, None]
    raise ValueError(f"unknown material {k}")


# ----------------------------------------------------------------------------------------------------------
# scene sampling
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Scene:
    """A sampled scene: camera, room, surfaces, decals and lights."""

    cam_pos: np.ndarray
    cam_rot: np.ndarray  # camera (x right, y down, z forward) -> world, columns
    fx: float
    fy: float
    cx: float
    cy: float
    surfaces: list[Surface]
    decals: list[Decal]
    light: np.ndarray
    light_color: np.ndarray
    fill_dir: np.ndarray
    ambient: float
    room: tuple[float, float, float]


def _camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    f = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    up = np.array([0.0, 1.0, 0.0])
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    down = np.cross(f, r)
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        r, down = c * r + s * down, -s * r + c * down
    return np.stack([r, down, f], axis=1)


def sample_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw a random room, camera, objects, decals and lights."""
    rw, rd, rh = rng.uniform(3.6, 6.0), rng.uniform(4.8, 7.5), rng.uniform(2.5, 3.0)
    cam = np.array([rng.uniform(-0.2, 0.2) * rw, rng.uniform(1.15, 1.6), rng.uniform(0.15, 0.5)])
    yaw, pitch = math.radians(rng.uniform(-22, 22)), math.radians(rng.uniform(-24, -8))
    rot = _camera_rotation(yaw, pitch, math.radians(rng.uniform(-2.5, 2.5)))
    fx = fy = 0.81 * width
    cx, cy = width / 2.0, height / 2.0

    surfaces: list[Surface] = []
    # room materials
    if rng.random() < 0.65:
        floor_mat = Material("planks", _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.75)),
                             scale=rng.uniform(0.14, 0.24), phase=rng.random())  # fmt: skip
    else:
        base = rng.uniform(0.55, 0.85)
        floor_mat = Material("tiles", _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), base),
                             _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), base * rng.uniform(0.75, 0.95)),
                             scale=rng.uniform(0.35, 0.6), phase=rng.random())  # fmt: skip
    wall_mat = Material(
        "paint", _hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.72, 0.92)), phase=rng.random()
    )
    ceil_mat = Material("paint", _hsv(rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.06), rng.uniform(0.88, 0.97)))
    y_up, x_pos, z_pos = np.eye(3)[1], np.eye(3)[0], np.eye(3)[2]
    surfaces.append(Surface("plane", FLOOR, 0, floor_mat, np.zeros(3), y_up))
    surfaces.append(Surface("plane", CEILING, 1, ceil_mat, np.array([0.0, rh, 0.0]), -y_up))
    surfaces.append(Surface("plane", WALL, 2, wall_mat, np.array([-rw / 2, 0.0, 0.0]), x_pos))
    surfaces.append(Surface("plane", WALL, 3, wall_mat, np.array([rw / 2, 0.0, 0.0]), -x_pos))
    surfaces.append(Surface("plane", WALL, 4, wall_mat, np.array([0.0, 0.0, rd]), -z_pos))
    surfaces.append(Surface("plane", WALL, 5, wall_mat, np.zeros(3), z_pos))
    next_inst = 6

    # decals: door, paintings on walls; rug on the floor
    decals: list[Decal] = []
    wall_rects: dict[int, list[tuple[float, float, float, float]]] = {2: [], 3: [], 4: []}

    def wall_extent(p: int) -> tuple[float, float]:
        return (0.3, rd - 0.3) if p in (2, 3) else (-rw / 2 + 0.3, rw / 2 - 0.3)

    def free(p: int, rect: tuple[float, float, float, float]) -> bool:
        return all(rect[1] < r[0] - 0.15 or rect[0] > r[1] + 0.15 for r in wall_rects[p])

    if rng.random() < 0.7:
        p = int(rng.choice([2, 3, 4], p=[0.3, 0.3, 0.4]))
        lo, hi = wall_extent(p)
        dw = rng.uniform(0.8, 1.0)
        u0 = rng.uniform(lo, hi - dw)
        rect = (u0, u0 + dw, 0.0, rng.uniform(2.0, 2.15))
        light_wood = rng.random() < 0.5
        col = _hsv(0.09, 0.1, 0.92) if light_wood else _hsv(rng.uniform(0.05, 0.09), 0.6, rng.uniform(0.3, 0.45))
        decals.append(Decal(p, DOOR, next_inst, Material("door", col, col * 0.75, extra={"rect": rect}), rect))
        wall_rects[p].append(rect)
        next_inst += 1
    for _ in range(int(rng.integers(0, 3))):
        p = int(rng.choice([2, 3, 4], p=[0.25, 0.25, 0.5]))
        lo, hi = wall_extent(p)
        pw, ph = rng.uniform(0.5, 1.3), rng.uniform(0.4, 0.9)
        u0 = rng.uniform(lo, hi - pw)
        vc = rng.uniform(1.35, min(1.85, rh - 0.3 - ph / 2))
        rect = (u0, u0 + pw, vc - ph / 2, vc + ph / 2)
        if not free(p, rect):
            continue
        palette = np.stack([_hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)) for _ in range(3)])
        frame = _hsv(0.1, 0.6, 0.55) if rng.random() < 0.5 else np.full(3, rng.uniform(0.05, 0.2))
        mat = Material("painting", palette[0], frame, phase=rng.uniform(0, 6.28),
                       extra={"rect": rect, "palette": palette, "freqs": rng.uniform(2, 9, size=4)})  # fmt: skip
        decals.append(Decal(p, PAINTING, next_inst, mat, rect))
        wall_rects[p].append(rect)
        next_inst += 1
    if rng.random() < 0.6:
        ru, rv = rng.uniform(1.2, 2.6), rng.uniform(1.0, 2.0)
        uc, vc = (
            rng.uniform(-rw / 2 + ru / 2 + 0.2, rw / 2 - ru / 2 - 0.2),
            rng.uniform(cam[2] + 1.2, rd - rv / 2 - 0.3),
        )
        rect = (uc - ru / 2, uc + ru / 2, vc - rv / 2, vc + rv / 2)
        col = _hsv(rng.choice([0.0, 0.6, 0.35, 0.08]) + rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.8),
                   rng.uniform(0.45, 0.75))  # fmt: skip
        mat = Material("rug", col, _hsv(rng.random(), 0.3, rng.uniform(0.7, 0.9)),
                       extra={"rect": rect, "pattern": int(rng.integers(0, 2))})  # fmt: skip
        decals.append(Decal(0, RUG, next_inst, mat, rect))
        next_inst += 1

    # objects
    footprints: list[tuple[float, float, float]] = []
    tables: list[tuple[float, float, float, float]] = []  # x, z, top height, half size

    def visible(x: float, y: float, z: float) -> bool:
        pc = rot.T @ (np.array([x, y, z]) - cam)
        if pc[2] < 0.8:
            return False
        u, v = fx * pc[0] / pc[2] + cx, fy * pc[1] / pc[2] + cy
        return -0.05 * width < u < 1.05 * width and -0.05 * height < v < 1.05 * height

    def place(radius: float, y_probe: float, wall: bool = False) -> tuple[float, float, float] | None:
        for _ in range(40):
            if wall:
                side = int(rng.integers(0, 3))
                if side == 0:
                    x, z, yw = rng.uniform(-rw / 2 + radius, rw / 2 - radius), rd - radius * 0.6, 0.0
                else:
                    sgn = -1 if side == 1 else 1
                    x, z, yw = sgn * (rw / 2 - radius * 0.6), rng.uniform(cam[2] + 1.5, rd - radius), sgn * math.pi / 2
            else:
                x = rng.uniform(-rw / 2 + radius + 0.1, rw / 2 - radius - 0.1)
                z = rng.uniform(cam[2] + 1.2 + radius, rd - radius - 0.1)
                yw = rng.uniform(-0.6, 0.6)
            if not visible(x, y_probe, z):
                continue
            if all(math.hypot(x - fx_, z - fz_) > radius + fr + 0.08 for fx_, fz_, fr in footprints):
                footprints.append((x, z, radius))
                return x, z, yw
        return None

    kinds = rng.choice(
        ["table", "cabinet", "sofa", "crate", "ball", "bin", "column"],
        size=int(rng.integers(3, 8)),
        p=[0.17, 0.15, 0.12, 0.18, 0.15, 0.13, 0.10],
    )
    for kind in kinds:
        inst = next_inst
        if kind == "table":
            sx, sz, th = rng.uniform(0.8, 1.5), rng.uniform(0.6, 1.0), rng.uniform(0.68, 0.8)
            spot = place(0.5 * math.hypot(sx, sz), th, wall=False)
            if spot is None:
                continue
            x, z, yw = spot
            col = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.7))
            mat = Material("wood", col, scale=rng.uniform(3, 8), phase=rng.random())
            r = _rot_y(yw)
            surfaces.append(Surface("box", TABLE, inst, mat, np.array([x, th - 0.025, z]),
                                    np.array([sx / 2, 0.025, sz / 2]), yw))  # fmt: skip
            for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                off = r @ np.array([lx * (sx / 2 - 0.06), 0.0, lz * (sz / 2 - 0.06)])
                surfaces.append(Surface("box", TABLE, inst, mat, np.array([x + off[0], (th - 0.05) / 2, z + off[2]]),
                                        np.array([0.03, (th - 0.05) / 2, 0.03]), yw))  # fmt: skip
            tables.append((x, z, th, min(sx, sz) / 2))
        elif kind == "cabinet":
            cw, cd, ch = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.6), rng.uniform(1.1, min(2.1, rh - 0.2))
            spot = place(max(cw, cd) / 2, ch / 2, wall=True)
            if spot is None:
                continue
            x, z, yw = spot
            white = rng.random() < 0.5
            col = (
                _hsv(0.1, rng.uniform(0.0, 0.08), rng.uniform(0.8, 0.95))
                if white
                else _hsv(rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.5), rng.uniform(0.5, 0.75))
            )
            mat = Material("drawers", col, np.full(3, 0.2), scale=rng.uniform(0.3, 0.45), phase=rng.random())
            surfaces.append(Surface("box", CABINET, inst, mat, np.array([x, ch / 2, z]),
                                    np.array([cw / 2, ch / 2, cd / 2]), yw))  # fmt: skip
        elif kind == "sofa":
            sw, sd = rng.uniform(1.4, 2.1), rng.uniform(0.8, 0.95)
            spot = place(sw / 2, 0.45, wall=False)
            if spot is None:
                continue
            x, z, yw = spot
            col = _hsv(rng.choice([0.6, 0.35, 0.0, 0.08, 0.75]) + rng.uniform(-0.04, 0.04), rng.uniform(0.35, 0.75),
                       rng.uniform(0.3, 0.7))  # fmt: skip
            mat = Material("fabric", col, phase=rng.random())
            r = _rot_y(yw)
            parts = [  # (centre offset in local coords, half extents)
                (np.array([0.0, 0.22, 0.0]), np.array([sw / 2, 0.22, sd / 2])),
                (np.array([0.0, 0.45, sd / 2 - 0.1]), np.array([sw / 2, 0.45, 0.1])),
                (np.array([sw / 2 - 0.09, 0.32, 0.0]), np.array([0.09, 0.32, sd / 2])),
                (np.array([-(sw / 2 - 0.09), 0.32, 0.0]), np.array([0.09, 0.32, sd / 2])),
            ]
            for off, half in parts:
                c = np.array([x, 0.0, z]) + r @ off
                surfaces.append(Surface("box", SOFA, inst, mat, c, half, yw))
        elif kind == "crate":
            s = rng.uniform(0.3, 0.6)
            col = _hsv(rng.uniform(0.07, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.55, 0.75))
            mat = Material("cardboard", col, _hsv(0.1, 0.2, 0.85), scale=s)
            if tables and rng.random() < 0.4:
                tx, tz, th, half = tables[int(rng.integers(len(tables)))]
                y0, x, z, yw = (
                    th,
                    tx + rng.uniform(-0.3, 0.3) * half,
                    tz + rng.uniform(-0.3, 0.3) * half,
                    rng.uniform(-1, 1),
                )
                s = min(s, half)
            else:
                spot = place(s * 0.75, s / 2, wall=False)
                if spot is None:
                    continue
                (x, z, yw), y0 = spot, 0.0
            surfaces.append(Surface("box", CRATE, inst, mat, np.array([x, y0 + s / 2, z]), np.full(3, s / 2), yw))
        elif kind == "ball":
            rad = rng.uniform(0.12, 0.32)
            spot = place(rad, rad, wall=False)
            if spot is None:
                continue
            x, z, _ = spot
            col = _hsv(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
            mat = Material("ball", col, _hsv(rng.random(), rng.uniform(0.0, 0.3), 0.95), scale=rad)
            surfaces.append(Surface("sphere", BALL, inst, mat, np.array([x, rad, z]), np.array([rad, 0, 0])))
        elif kind == "bin":
            rad, h = rng.uniform(0.15, 0.28), rng.uniform(0.4, 0.8)
            spot = place(rad, h / 2, wall=False)
            if spot is None:
                continue
            x, z, _ = spot
            col = _hsv(rng.choice([0.55, 0.6, 0.3, 0.0]), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.7))
            mat = Material("bands", col, col * 0.55, scale=rng.uniform(0.12, 0.2), phase=rng.random())
            surfaces.append(Surface("cylinder", BIN, inst, mat, np.array([x, 0.0, z]), np.array([rad, h, 0])))
        else:  # column
            rad = rng.uniform(0.15, 0.28)
            spot = place(rad, 1.2, wall=False)
            if spot is None:
                continue
            x, z, _ = spot
            col = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.12), rng.uniform(0.75, 0.9))
            mat = Material("stone", col, phase=rng.random())
            surfaces.append(Surface("cylinder", COLUMN, inst, mat, np.array([x, 0.0, z]), np.array([rad, rh, 0])))
        next_inst += 1

    light = np.array([rng.uniform(-0.3, 0.3) * rw, rh - 0.15, rng.uniform(0.3, 0.7) * rd])
    light_color = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), 1.0)
    fill = np.array([rng.uniform(-1, 1), rng.uniform(0.2, 1.0), rng.uniform(-1, 0.2)])
    return Scene(cam, rot, fx, fy, cx, cy, surfaces, decals, light, light_color, fill / np.linalg.norm(fill),
                 rng.uniform(0.3, 0.45), (rw, rd, rh))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------
def _cast(o: np.ndarray, d: np.ndarray, surfaces: list[Surface]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t_best = np.full(len(d), np.inf)
    sid = np.full(len(d), -1, dtype=np.int64)
    nrm = np.zeros_like(d)
    for k, s in enumerate(surfaces):
        t, n = _HIT[s.kind](o, d, s)
        closer = t < t_best
        if closer.any():
            t_best = np.where(closer, t, t_best)
            sid[closer] = k
            nrm[closer] = n[closer] if n.shape == nrm.shape else n
    return t_best, sid, nrm


def _occluded(p: np.ndarray, light: np.ndarray, surfaces: list[Surface]) -> np.ndarray:
    """Whether the segment from each point to the light hits an object (room planes cast no shadow)."""
    d = light - p
    occ = np.zeros(len(p), dtype=bool)
    for s in surfaces:
        if s.kind == "plane":
            continue
        t, _ = _HIT[s.kind](p, d, s)
        occ |= (t > 1e-3) & (t < 1.0)
    return occ


def render_scene(scene: Scene, height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Ray-cast ``scene`` into image, labels, depth, normals, edges and saliency."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    dc = np.stack([(u - scene.cx) / scene.fx, (v - scene.cy) / scene.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    dw = dc @ scene.cam_rot.T  # z-depth parametrisation: t is the camera z of the hit
    t, sid, nrm = _cast(scene.cam_pos, dw, scene.surfaces)
    if not np.isfinite(t).all():  # cannot happen inside a closed room; guard anyway
        t = np.where(np.isfinite(t), t, MAX_DEPTH)
    p = scene.cam_pos + t[:, None] * dw

    n_pix = len(t)
    cls = np.zeros(n_pix, dtype=np.int64)
    inst = np.zeros(n_pix, dtype=np.int64)
    albedo = np.zeros((n_pix, 3))
    noise = _Noise(rng)
    for k, s in enumerate(scene.surfaces):
        m = sid == k
        if not m.any():
            continue
        cls[m], inst[m] = s.cls, s.inst
        pk = p[m]
        if s.kind == "plane":
            uu, vv = _plane_uv(s.dims, pk)
            ww = np.zeros_like(uu)
        elif s.kind == "box":
            pl = (pk - s.pos) @ _rot_y(s.yaw)
            nl = nrm[m] @ _rot_y(s.yaw)
            ax = np.abs(nl).argmax(axis=1)  # face-aligned (u, v): v is vertical except on top faces
            uu = np.where(ax == 0, pl[:, 2], pl[:, 0])
            vv = np.where(ax == 1, pl[:, 2], pl[:, 1])
            ww = pl[:, 0] + pl[:, 2]
        else:
            pl = pk - s.pos
            uu, vv, ww = pl[:, 0], pl[:, 1], pl[:, 2]
        albedo[m] = _albedo(s.mat, uu, vv, ww, noise)
        for dec in scene.decals:
            if dec.plane != k:
                continue
            u0, u1, v0, v1 = dec.rect
            inside = (uu >= u0) & (uu <= u1) & (vv >= v0) & (vv <= v1)
            if inside.any():
                idx = np.flatnonzero(m)[inside]
                cls[idx], inst[idx] = dec.cls, dec.inst
                albedo[idx] = _albedo(dec.mat, uu[inside], vv[inside], ww[inside], noise)

    # lighting: point light with shadows + directional fill + ambient
    to_l = scene.light - p
    dist = np.sqrt(_dot(to_l, to_l))
    ndotl = np.clip(_dot(nrm, to_l) / dist, 0.0, 1.0)
    lit = ndotl > 0
    shadow = np.zeros(n_pix, dtype=bool)
    if lit.any():
        shadow[lit] = _occluded(p[lit] + nrm[lit] * 1e-3, scene.light, scene.surfaces)
    atten = 1.0 / (1.0 + 0.06 * dist**2)
    diffuse = 1.25 * ndotl * atten * np.where(shadow, 0.25, 1.0)
    fill = 0.25 * np.clip(nrm @ scene.fill_dir, 0.0, 1.0)
    shade = scene.ambient + diffuse + fill
    rgb = albedo * shade[:, None] * scene.light_color
    rgb = rgb.reshape(height, width, 3)
    # exposure, vignetting, sensor noise
    rgb *= 0.9 / max(np.percentile(rgb, 97), 1e-3)
    yy, xx = (v - height / 2) / height, (u - width / 2) / width
    rgb *= (1.0 - 0.35 * (xx**2 + yy**2))[..., None]
    rgb += rng.normal(0.0, 0.012, size=rgb.shape)
    image = (np.clip(rgb, 0.0, 1.0) ** (1 / 1.1) * 255 + 0.5).astype(np.uint8)

    # normals: world -> camera (x right, y down, z forward) -> contract frame (x right, y up, z to viewer)
    nc = nrm @ scene.cam_rot
    normals = np.stack([nc[:, 0], -nc[:, 1], -nc[:, 2]], axis=1).reshape(height, width, 3)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    inst_map = inst.reshape(height, width)
    edge = np.zeros((height, width), dtype=bool)
    edge[:, :-1] |= inst_map[:, :-1] != inst_map[:, 1:]
    edge[:-1, :] |= inst_map[:-1, :] != inst_map[1:, :]
    seg = cls.reshape(height, width).astype(np.uint8)
    return {
        "image": image,
        "seg": seg,
        "depth": np.clip(t, MIN_DEPTH, MAX_DEPTH).reshape(height, width).astype(np.float32),
        "normals": normals.astype(np.float32),
        "edge": edge.astype(np.uint8),
        "sal": (seg >= SALIENT_MIN_CLASS).astype(np.uint8),
        "instance": inst_map.astype(np.int32),
    }


def generate_sample(seed: int, split: str, index: int, height: int = 128, width: int = 160) -> dict[str, Any]:
    """Render sample ``index`` of ``split``; deterministic in ``(seed, split, index, height, width)``."""
    rng = np.random.default_rng([int(seed), _SPLITS.get(split, 2), int(index)])
    scene = sample_scene(rng, height, width)
    out = render_scene(scene, height, width, rng)
    out["focal"] = scene.fx
    return out


# ----------------------------------------------------------------------------------------------------------
# writers (one per on-disk layout)
# ----------------------------------------------------------------------------------------------------------
def sample_name(layout: str, split: str, index: int) -> str:
    """File stem of a sample in a layout (ADE20K-style names for ADE20K, ``<split>_<index>`` otherwise)."""
    if layout == "ade20k":
        return f"ADE_{split}_{index + 1:08d}"
    return f"{split}_{index:05d}"


def _write_nyud_mt(out: Path, split: str, index: int, s: dict) -> str:
    name = sample_name("nyud_mt", split, index)
    write_jpg(out / "images" / f"{name}.jpg", s["image"])
    write_png(out / "segmentation" / f"{name}.png", s["seg"] + 1)  # 0 = unlabelled, 1..K = classes
    # compact dtypes (the loader casts to float32): depth float32, normals float16, edges uint8
    for key, dtype in (("depth", np.float32), ("normals", np.float16), ("edge", np.uint8)):
        (out / key).mkdir(parents=True, exist_ok=True)
        np.save(out / key / f"{name}.npy", s[key].astype(dtype))
    write_png(out / "sal" / f"{name}.png", s["sal"] * 255)
    return name


def _write_ade20k(out: Path, split: str, index: int, s: dict) -> str:
    ade_split = "training" if split == "train" else "validation"
    name = f"ADE_{'train' if split == 'train' else 'val'}_{index + 1:08d}"
    write_jpg(out / "images" / ade_split / f"{name}.jpg", s["image"])
    write_png(out / "annotations" / ade_split / f"{name}.png", s["seg"] + 1)  # 0 = other (ignored)
    return name


def _write_voc(out: Path, split: str, index: int, s: dict) -> str:
    from bindense.data.voc import voc_palette

    name = sample_name("voc", split, index)
    write_jpg(out / "JPEGImages" / f"{name}.jpg", s["image"])
    seg = s["seg"].copy()
    seg[(s["edge"] > 0) & (s["sal"] > 0)] = 255  # VOC marks object borders as void
    write_png(out / "SegmentationClass" / f"{name}.png", seg, palette=voc_palette())
    return name


def _write_bts_nyu(out: Path, split: str, index: int, s: dict) -> str:
    sub = "sync" if split == "train" else "official_splits/test"
    scene = f"room_{index // 20:04d}"
    name = f"{scene}/rgb_{index:05d}"
    write_jpg(out / sub / scene / f"rgb_{index:05d}.jpg", s["image"])
    write_png(out / sub / scene / f"sync_depth_{index:05d}.png", np.round(s["depth"] * 1000).astype(np.uint16))
    prefix = "/" if split == "train" else ""  # the BTS train list has a leading slash, the test list none
    return f"{prefix}{scene}/rgb_{index:05d}.jpg {prefix}{scene}/sync_depth_{index:05d}.png {s['focal']:.4f}|{name}"


def _write_bts_kitti(out: Path, split: str, index: int, s: dict) -> str:
    drive = f"2011_09_26_drive_{index // 20 + (0 if split == 'train' else 500):04d}_sync"
    rgb = f"2011_09_26/{drive}/image_02/data/{index:010d}.png"
    dep = f"{drive}/proj_depth/groundtruth/image_02/{index:010d}.png"
    _write_rgb_png(out / rgb, s["image"])  # KITTI raw frames are PNG
    # LiDAR-like sparsity: no points in the upper rows, ~30 % of the pixels below
    rng = np.random.default_rng(index)
    depth = s["depth"].copy()
    h = depth.shape[0]
    keep = rng.random(depth.shape) < 0.3
    keep[: int(0.3 * h)] = False
    depth[~keep] = 0.0
    write_png(out / "data_depth_annotated" / dep, np.round(depth * 256).astype(np.uint16))
    return f"{rgb} {dep} {s['focal']:.4f}|{drive}/{index:010d}"


def _write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


PASCAL_PERSON_PARTS = ["head", "torso", "luarm", "llarm", "luleg", "llleg"]


def _write_pascal(out: Path, split: str, index: int, s: dict) -> str:
    from scipy.io import savemat

    name = sample_name("pascal_context_mt", split, index)
    write_jpg(out / "JPEGImages" / f"{name}.jpg", s["image"])
    write_png(out / "semseg" / "pascal-context" / f"{name}.png", s["seg"])
    write_png(out / "sal_distill" / f"{name}.png", s["sal"] * 255)
    nrm = np.clip((s["normals"] + 1.0) / 2.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    _write_rgb_png(out / "normals_distill" / f"{name}.png", nrm)
    # PASCAL-Context LabelMap: synthetic class c -> context id c + 1
    (out / "pascal-context" / "trainval").mkdir(parents=True, exist_ok=True)
    savemat(out / "pascal-context" / "trainval" / f"{name}.mat", {"LabelMap": (s["seg"] + 1).astype(np.uint16)},
            do_compression=True)  # fmt: skip
    # human parts: cabinets play the person (class 15), split into 6 horizontal bands of parts
    obj_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    part_dtype = [("part_name", "O"), ("mask", "O")]
    objects = []
    inst = s["instance"]
    for i in np.unique(inst[s["sal"] > 0]):
        mask = inst == i
        cls = int(s["seg"][mask][0])
        parts = np.zeros((1, 0), dtype=part_dtype)
        if cls == CABINET:
            rows = np.flatnonzero(mask.any(axis=1))
            bands = np.array_split(np.arange(rows.min(), rows.max() + 1), len(PASCAL_PERSON_PARTS))
            parts = np.zeros((1, len(bands)), dtype=part_dtype)
            for j, (pname, band) in enumerate(zip(PASCAL_PERSON_PARTS, bands)):
                pm = np.zeros_like(mask)
                pm[band] = mask[band]
                parts[0, j] = (pname, pm.astype(np.uint8))
        objects.append(("person" if cls == CABINET else CLASS_NAMES[cls], 15 if cls == CABINET else 100 + cls,
                        mask.astype(np.uint8), parts))  # fmt: skip
    objs = np.zeros((1, len(objects)), dtype=obj_dtype)
    for j, o in enumerate(objects):
        objs[0, j] = o
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (name, objs)
    (out / "human_parts").mkdir(parents=True, exist_ok=True)
    savemat(out / "human_parts" / f"{name}.mat", {"anno": anno}, do_compression=True)
    return name


_WRITERS: dict[str, Callable[[Path, str, int, dict], str]] = {
    "nyud_mt": _write_nyud_mt,
    "ade20k": _write_ade20k,
    "voc": _write_voc,
    "bts_nyu": _write_bts_nyu,
    "bts_kitti": _write_bts_kitti,
    "pascal_context_mt": _write_pascal,
}


def _job(args: tuple) -> tuple[str, int, str]:
    out, layout, split, index, seed, height, width = args
    s = generate_sample(seed, split, index, height, width)
    return split, index, _WRITERS[layout](Path(out), split, index, s)


def _finalize(out: Path, layout: str, entries: dict[str, list[str]]) -> None:
    """Write split / filenames files and class lists of a layout."""
    if layout == "nyud_mt":
        (out / "gt_sets").mkdir(parents=True, exist_ok=True)
        for split, names in entries.items():
            (out / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
    elif layout == "ade20k":
        rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i + 1}\t0\t0\t0\t{n}" for i, n in enumerate(CLASS_NAMES)]
        (out / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    elif layout == "voc":
        (out / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        for split, names in entries.items():
            (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    elif layout in ("bts_nyu", "bts_kitti"):
        files = (
            {"train": "nyudepthv2_train_files_with_gt.txt", "val": "nyudepthv2_test_files_with_gt.txt"}
            if layout == "bts_nyu"
            else {"train": "eigen_train_files_with_gt.txt", "val": "eigen_test_files_with_gt.txt"}
        )
        for split, lines in entries.items():
            rows = [ln.split("|")[0] for ln in lines]
            if layout == "bts_kitti" and split == "val":  # a frame without ground truth, as in the Eigen list
                rows.append("2011_09_26/2011_09_26_drive_9999_sync/image_02/data/0000000000.png None 721.5377")
            (out / files[split]).write_text("\n".join(rows) + "\n")
    elif layout == "pascal_context_mt":
        (out / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
        for split, names in entries.items():
            (out / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(names) + "\n")
        (out / "json").mkdir(parents=True, exist_ok=True)
        ctx = {n: i + 1 for i, n in enumerate(CLASS_NAMES)}
        ctx["tvmonitor"] = len(CLASS_NAMES) + 1
        (out / "json" / "context_classes.json").write_text(json.dumps(ctx))
        nyu_like = [n for n in CLASS_NAMES if n not in ("ball", "column")] + ["unknown"]  # classes with normals
        (out / "json" / "nyu_classes.json").write_text(json.dumps(nyu_like))


def canonical_layout(layout: str) -> str:
    """Resolve aliases (``bts`` -> ``bts_nyu``, ``kitti`` -> ``bts_kitti``) and validate."""
    layout = LAYOUT_ALIASES.get(layout, layout)
    if layout not in _WRITERS:
        raise ValueError(f"unknown synthetic layout {layout!r}; choose from {LAYOUTS} (aliases {LAYOUT_ALIASES})")
    return layout


def write_synthetic(
    out: str | Path,
    layout: str = "nyud_mt",
    num_train: int = 400,
    num_val: int = 100,
    seed: int = 0,
    height: int = 128,
    width: int = 160,
    workers: int | None = None,
) -> Path:
    """Render ``num_train + num_val`` scenes and write them into ``out`` in ``layout``.

    Args:
        workers: processes to use (default: all CPUs, at most 8; 0 or 1 renders in this process).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    layout = canonical_layout(layout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), layout, split, i, seed, height, width)
            for split, n in (("train", num_train), ("val", num_val)) for i in range(n)]  # fmt: skip
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers > 1 and len(jobs) > 8:
        ctx = get_context("fork") if "fork" in _start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            results = list(ex.map(_job, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    else:
        results = [_job(j) for j in jobs]
    entries: dict[str, list[str]] = {"train": [], "val": []}
    for split, _, entry in sorted(results, key=lambda r: (_SPLITS[r[0]], r[1])):
        entries[split].append(entry)
    _finalize(out, layout, {k: v for k, v in entries.items() if v})
    return out


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


MARKER = ".synthetic.json"


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_synthetic(root: str | Path, layout: str = "nyud_mt", **params: Any) -> Path:
    """Make sure ``root`` holds the synthetic dataset described by ``params``; generate it if not.

    The cache is identified by a marker file with the generation parameters; a cache with other
    parameters is regenerated. A non-empty directory without the marker is never touched.
    Generation happens in a temporary sibling directory renamed into place (safe for concurrent runs).
    """
    layout = canonical_layout(layout)
    root = Path(root).expanduser()
    want = {"layout": layout, "version": GENERATOR_VERSION, **{k: v for k, v in params.items() if k != "workers"}}
    if _read_marker(root) == want:
        return root
    if not (root / MARKER).is_file() and root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"synthetic cache '{root}' exists, is not empty and has no {MARKER}: refusing to overwrite it; "
            "point data.root at an empty or new directory"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    write_synthetic(tmp, layout=layout, **params)
    (tmp / MARKER).write_text(json.dumps(want, indent=1))
    if root.exists():
        if _read_marker(root) == want:  # a concurrent run finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:  # a concurrent run won the race
        shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger(__name__).info("generated synthetic %s dataset in %s (%.1f s)", layout, root, time.time() - t0)
    return root
