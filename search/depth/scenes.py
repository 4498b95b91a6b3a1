"""Procedurally rendered indoor scenes with exact depth: the ``builtin-depth`` data set.

No download: every image is ray-cast from a random room, deterministically from
``(seed, index)``. A pinhole camera (NYU-like field of view, ~58 deg horizontal) stands
1.0-1.6 m above the floor of a box-shaped room (floor, ceiling, back and side walls at
random distances) with a random pitch and yaw; 0-4 boxes (random size, yaw) stand on the
floor and 0-3 spheres rest on it or float. Surfaces carry textures whose image-space
frequency falls with distance (checkerboards and planks on the floor, stripes and noise on
walls and objects) and are lit by an ambient term plus a point light near the ceiling
with distance fall-off: texture gradients, perspective, occlusion and shading are the
depth cues, as in real rooms.

Depth is the z distance along the optical axis in metres (as NYU's), 0.2-12 m. About a
third of the images get 1-3 elliptical "sensor holes" with depth 0 (like the Kinect's),
so the valid-pixel mask of loss and metrics is exercised. RGB is float in [0, 1] with
mild pixel noise.

Why it is hard enough that width changes RMSE: the network must infer metric depth of
planes and objects at random poses from monocular cues only; a narrow decoder blurs
object boundaries and a narrow encoder misses the room's layout (measured in
`benchmarks/bench_depth.py`).
"""
from __future__ import annotations

import numpy as np

MAX_DEPTH = 12.0  # metres; nothing in a scene is farther (room <= 8 m deep, yaw/pitch bounded)


def _rot(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation: pitch about x (positive looks up), then yaw about y."""
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx


def _stripes(a: np.ndarray, period: float, phase: float) -> np.ndarray:
    return 0.5 + 0.5 * np.sin(2 * np.pi * a / period + phase)


def _checker(a: np.ndarray, b: np.ndarray, size: float) -> np.ndarray:
    return ((np.floor(a / size) + np.floor(b / size)) % 2).astype(np.float64)


def render(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (rgb float32 (3, H, W) in [0, 1], depth float32 (H, W) in metres, 0 = hole)."""
    rng = np.random.default_rng((seed, index))
    f = 0.9 * width  # ~58 deg horizontal field of view (Kinect)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d_cam = np.stack([(u + 0.5 - width / 2) / f, -(v + 0.5 - height / 2) / f, np.ones_like(u)], -1)
    cam_h = rng.uniform(1.0, 1.6)
    rot = _rot(rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.1))
    d = d_cam @ rot.T  # world directions; camera depth = ray parameter t (d_cam.z = 1)
    o = np.array([0.0, cam_h, 0.0])
    room_h = rng.uniform(2.4, 3.2)
    back, left, right = rng.uniform(3.0, 8.0), rng.uniform(1.2, 3.0), rng.uniform(1.2, 3.0)

    t_best = np.full((height, width), np.inf)
    normal = np.zeros((height, width, 3))
    albedo = np.zeros((height, width, 3))

    def colour() -> np.ndarray:
        return rng.uniform(0.15, 0.95, 3)

    def take(t: np.ndarray, n: np.ndarray, alb: np.ndarray) -> None:
        hit = (t > 1e-4) & (t < t_best)
        t_best[hit] = t[hit]
        normal[hit] = n[hit] if n.ndim == 3 else n
        albedo[hit] = alb[hit]

    def plane(axis: int, value: float, n: np.ndarray, texture) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - o[axis]) / d[..., axis]
        t = np.where(np.isfinite(t), t, np.inf)
        p = o + t[..., None] * np.where(np.isfinite(t)[..., None], d, 0)
        take(t, n, texture(p))

    # floor: checkerboard tiles or planks, two colours
    c1, c2 = colour(), colour()
    kind, size = rng.integers(2), rng.uniform(0.25, 0.8)
    phase = rng.uniform(0, 2 * np.pi)

    def floor_tex(p):
        m = _checker(p[..., 0], p[..., 2], size) if kind == 0 else _stripes(p[..., 0], size, phase) ** 4
        return c1 * m[..., None] + c2 * (1 - m[..., None])
    plane(1, 0.0, np.array([0.0, 1.0, 0.0]), floor_tex)
    ceil_c = rng.uniform(0.7, 0.95) * np.ones(3)
    plane(1, room_h, np.array([0.0, -1.0, 0.0]), lambda p: np.broadcast_to(ceil_c, p.shape))
    for axis, value, n, (a, b) in ((2, back, (0, 0, -1), (0, 1)), (0, -left, (1, 0, 0), (2, 1)),
                                   (0, right, (-1, 0, 0), (2, 1)), (2, -1.0, (0, 0, 1), (0, 1))):
        wc, wc2 = colour(), colour()
        period, ph, amount = rng.uniform(0.2, 1.0), rng.uniform(0, 6.3), rng.uniform(0, 0.6)
        vertical = rng.integers(2)

        def wall_tex(p, wc=wc, wc2=wc2, period=period, ph=ph, amount=amount, a=a, b=b, vertical=vertical):
            m = amount * _stripes(p[..., a] if vertical else p[..., b], period, ph)
            return wc * (1 - m[..., None]) + wc2 * m[..., None]
        plane(axis, value, np.array(n, np.float64), wall_tex)

    # boxes standing on the floor, yawed
    for _ in range(rng.integers(0, 5)):
        half = np.array([rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.6)])
        centre = np.array([rng.uniform(-left + 0.3, right - 0.3), half[1], rng.uniform(1.2, back - 0.3)])
        yaw = rng.uniform(0, np.pi / 2)
        ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        ob, db = (o - centre) @ ry, d @ ry  # into the box frame (ry.T applied on the left)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - ob) / db, (half - ob) / db
        t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_enter, t_exit = t_near.max(-1), t_far.min(-1)
        hit = (t_enter <= t_exit) & (t_enter > 0)
        t = np.where(hit, t_enter, np.inf)
        face = t_near.argmax(-1)
        n_box = np.zeros_like(d)
        np.put_along_axis(n_box, face[..., None], -np.sign(np.take_along_axis(db, face[..., None], -1)), -1)
        bc, period, ph = colour(), rng.uniform(0.08, 0.3), rng.uniform(0, 6.3)
        p_box = ob + np.where(np.isfinite(t), t, 0)[..., None] * db
        m = 0.25 * _stripes(p_box[..., 1], period, ph)
        take(t, n_box @ ry.T, bc * (1 - m[..., None]))

    # spheres on the floor or floating
    for _ in range(rng.integers(0, 4)):
        r = rng.uniform(0.12, 0.5)
        centre = np.array([rng.uniform(-left + r, right - r), r + rng.choice([0.0, rng.uniform(0.2, 1.2)]),
                           rng.uniform(1.0, back - r)])
        oc = o - centre
        a = (d * d).sum(-1)
        b = 2 * (d @ oc)
        disc = b * b - 4 * a * (oc @ oc - r * r)
        with np.errstate(invalid="ignore"):
            t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
        p = o + np.where(np.isfinite(t), t, 0)[..., None] * d
        sc, period = colour(), rng.uniform(0.05, 0.2)
        m = 0.3 * _stripes(p[..., 1] - centre[1], period, 0.0)
        take(t, (p - centre) / r, sc * (1 - m[..., None]))

    # shading: ambient + point light near the ceiling with distance fall-off
    t_best = np.where(np.isfinite(t_best), t_best, MAX_DEPTH)
    p = o + t_best[..., None] * d
    light = np.array([rng.uniform(-left, right), room_h - 0.1, rng.uniform(0.5, back)])
    to_light = light - p
    dist = np.linalg.norm(to_light, axis=-1, keepdims=True)
    lambert = np.clip((normal * to_light / dist).sum(-1, keepdims=True), 0, None)
    shade = rng.uniform(0.2, 0.4) + rng.uniform(0.8, 1.4) * lambert / (1 + 0.08 * dist ** 2)
    rgb = np.clip(albedo * shade + rng.normal(0, 0.015, albedo.shape), 0, 1)

    depth = np.clip(t_best, 0.2, MAX_DEPTH)
    if rng.random() < 1 / 3:  # sensor holes: invalid target pixels (depth 0)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry_, rx_ = rng.uniform(0.03, 0.12) * height, rng.uniform(0.03, 0.12) * width
            depth[((v - cy) / ry_) ** 2 + ((u - cx) / rx_) ** 2 < 1] = 0.0
    return rgb.transpose(2, 0, 1).astype(np.float32), depth.astype(np.float32)


def generate(n: int, seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes: rgb uint8 (n, 3, H, W) and depth float16 (n, H, W) (compact; ~1 cm steps at 10 m)."""
    rgb = np.empty((n, 3, height, width), np.uint8)
    depth = np.empty((n, height, width), np.float16)
    for i in range(n):
        image, d = render(seed, i, height, width)
        rgb[i] = np.round(image * 255)
        depth[i] = d
    return rgb, depth
