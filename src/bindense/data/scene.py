"""Synthetic indoor scenes, described and sampled: a box-shaped room (floor, walls, ceiling) seen by a pinhole
camera (NYUv2-like field of view), with decals (door, paintings, rug), a few primitives of distinct classes
(tables, cabinets, sofas, crates, balls, bins, columns), their procedural materials and the lights.

:mod:`bindense.data.render` ray-casts a :class:`Scene`; :mod:`bindense.data.synthetic` writes the renders in
the real on-disk formats.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES = (
    "floor", "wall", "ceiling", "door", "painting", "rug",
    "table", "cabinet", "sofa", "crate", "ball", "bin", "column",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
FLOOR, WALL, CEILING, DOOR, PAINTING, RUG, TABLE, CABINET, SOFA, CRATE, BALL, BIN, COLUMN = range(NUM_CLASSES)
SALIENT_MIN_CLASS = TABLE  # classes >= TABLE are objects (salient)
MIN_DEPTH, MAX_DEPTH = 0.5, 9.9


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


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v))


def rot_y(yaw: float) -> np.ndarray:
    """Local -> world rotation about the vertical axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


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
        floor_mat = Material("planks", hsv(rng.uniform(0.05, 0.1), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.75)),
                             scale=rng.uniform(0.14, 0.24), phase=rng.random())  # fmt: skip
    else:
        base = rng.uniform(0.55, 0.85)
        floor_mat = Material("tiles", hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), base),
                             hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), base * rng.uniform(0.75, 0.95)),
                             scale=rng.uniform(0.35, 0.6), phase=rng.random())  # fmt: skip
    wall_mat = Material(
        "paint", hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.72, 0.92)), phase=rng.random()
    )
    ceil_mat = Material("paint", hsv(rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.06), rng.uniform(0.88, 0.97)))
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
        col = hsv(0.09, 0.1, 0.92) if light_wood else hsv(rng.uniform(0.05, 0.09), 0.6, rng.uniform(0.3, 0.45))
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
        palette = np.stack([hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)) for _ in range(3)])
        frame = hsv(0.1, 0.6, 0.55) if rng.random() < 0.5 else np.full(3, rng.uniform(0.05, 0.2))
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
        col = hsv(rng.choice([0.0, 0.6, 0.35, 0.08]) + rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.8),
                   rng.uniform(0.45, 0.75))  # fmt: skip
        mat = Material("rug", col, hsv(rng.random(), 0.3, rng.uniform(0.7, 0.9)),
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
            col = hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.7))
            mat = Material("wood", col, scale=rng.uniform(3, 8), phase=rng.random())
            r = rot_y(yw)
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
                hsv(0.1, rng.uniform(0.0, 0.08), rng.uniform(0.8, 0.95))
                if white
                else hsv(rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.5), rng.uniform(0.5, 0.75))
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
            col = hsv(rng.choice([0.6, 0.35, 0.0, 0.08, 0.75]) + rng.uniform(-0.04, 0.04), rng.uniform(0.35, 0.75),
                       rng.uniform(0.3, 0.7))  # fmt: skip
            mat = Material("fabric", col, phase=rng.random())
            r = rot_y(yw)
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
            col = hsv(rng.uniform(0.07, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.55, 0.75))
            mat = Material("cardboard", col, hsv(0.1, 0.2, 0.85), scale=s)
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
            col = hsv(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
            mat = Material("ball", col, hsv(rng.random(), rng.uniform(0.0, 0.3), 0.95), scale=rad)
            surfaces.append(Surface("sphere", BALL, inst, mat, np.array([x, rad, z]), np.array([rad, 0, 0])))
        elif kind == "bin":
            rad, h = rng.uniform(0.15, 0.28), rng.uniform(0.4, 0.8)
            spot = place(rad, h / 2, wall=False)
            if spot is None:
                continue
            x, z, _ = spot
            col = hsv(rng.choice([0.55, 0.6, 0.3, 0.0]), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.7))
            mat = Material("bands", col, col * 0.55, scale=rng.uniform(0.12, 0.2), phase=rng.random())
            surfaces.append(Surface("cylinder", BIN, inst, mat, np.array([x, 0.0, z]), np.array([rad, h, 0])))
        else:  # column
            rad = rng.uniform(0.15, 0.28)
            spot = place(rad, 1.2, wall=False)
            if spot is None:
                continue
            x, z, _ = spot
            col = hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.12), rng.uniform(0.75, 0.9))
            mat = Material("stone", col, phase=rng.random())
            surfaces.append(Surface("cylinder", COLUMN, inst, mat, np.array([x, 0.0, z]), np.array([rad, rh, 0])))
        next_inst += 1

    light = np.array([rng.uniform(-0.3, 0.3) * rw, rh - 0.15, rng.uniform(0.3, 0.7) * rd])
    light_color = hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.15), 1.0)
    fill = np.array([rng.uniform(-1, 1), rng.uniform(0.2, 1.0), rng.uniform(-1, 0.2)])
    return Scene(cam, rot, fx, fy, cx, cy, surfaces, decals, light, light_color, fill / np.linalg.norm(fill),
                 rng.uniform(0.3, 0.45), (rw, rd, rh))  # fmt: skip
