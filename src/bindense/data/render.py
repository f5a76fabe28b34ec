"""The renderer of the synthetic scenes: a small numpy ray caster with procedural textures, a point light with
cast shadows, a fill light and sensor noise. Every scene yields consistent

- ``image`` uint8 (H, W, 3), ``seg`` uint8 (H, W) in ``0..NUM_CLASSES-1``,
- ``depth`` float32 (H, W) z-depth in metres (within (0.5, 10)),
- ``normals`` float32 (H, W, 3), unit, camera frame x right, y up, z towards the viewer,
- ``edge`` uint8 (H, W): boundaries between surfaces/objects, ``sal`` uint8 (H, W): the objects.

Rendering is deterministic from ``(seed, split, index)``, independent of the number of worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bindense.data.scene import MAX_DEPTH, MIN_DEPTH, SALIENT_MIN_CLASS, Material, Scene, Surface, rot_y, sample_scene

#: split -> the second entry of a sample's RNG seed
SPLIT_IDS = {"train": 0, "val": 1}


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
    r = rot_y(s.yaw)
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
            pl = (pk - s.pos) @ rot_y(s.yaw)
            nl = nrm[m] @ rot_y(s.yaw)
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
    rng = np.random.default_rng([int(seed), SPLIT_IDS.get(split, 2), int(index)])
    scene = sample_scene(rng, height, width)
    out = render_scene(scene, height, width, rng)
    out["focal"] = scene.fx
    return out
