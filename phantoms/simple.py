"""A small analytic torso phantom: the built-in default for demos and smoke tests.

An elliptical soft-tissue body with a fat layer, two air-filled lungs, a
vertebral column of cortical shells around trabecular bone, a sternum and a
few ribs, on a 2 mm grid, in world RAS millimetres centred on the origin.
"""

from __future__ import annotations

import numpy as np

from projectors.volume import Volume

LABELS = {1: "body", 2: "lung_left", 3: "lung_right", 4: "spine", 5: "ribs"}


def torso_phantom(spacing: float = 2.0, size_mm=(360.0, 260.0, 300.0)) -> Volume:
    """Build the phantom (HU + label map). Deterministic: no randomness."""
    n = np.maximum(np.round(np.asarray(size_mm) / spacing).astype(int), 8)
    ax = [(np.arange(k) - (k - 1) / 2) * spacing for k in n]
    x, y, z = np.meshgrid(*ax, indexing="ij")  # x: patient right, y: anterior, z: superior
    hu = np.full(n, -1000.0, dtype=np.float32)
    labels = np.zeros(n, dtype=np.int16)

    body = (x / 160.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    inner = (x / 150.0) ** 2 + (y / 100.0) ** 2 <= 1.0
    hu[body] = -100.0  # subcutaneous fat
    hu[inner] = 40.0  # soft tissue
    labels[body] = 1
    for sx in (70.0, -70.0):  # RAS: +x is the patient's right
        lung = ((x - sx) / 55.0) ** 2 + ((y - 5.0) / 70.0) ** 2 + ((z - 30.0) / 120.0) ** 2 <= 1.0
        hu[lung] = -850.0
        labels[lung] = 3 if sx > 0 else 2
    r_spine = np.hypot(x, y + 65.0)
    spine = r_spine <= 18.0
    hu[spine] = 250.0
    hu[spine & (r_spine > 14.0)] = 1200.0
    labels[spine] = 4
    sternum = (np.abs(x) <= 15.0) & (np.abs(y - 95.0) <= 6.0) & (np.abs(z - 20.0) <= 80.0)
    hu[sternum] = 700.0
    for zc in np.arange(-60.0, 140.0, 28.0):  # ribs: elliptical rings inside the body wall
        ring = np.abs(np.sqrt((x / 140.0) ** 2 + (y / 92.0) ** 2) - 1.0) * 110.0 <= 4.0
        rib = ring & (np.abs(z - zc - 0.15 * y) <= 4.0) & (y > -75.0)
        hu[rib] = 900.0
        labels[rib] = 5
    return Volume.from_array(hu, spacing=spacing, labels=labels, label_names=LABELS, name="torso_phantom")
