"""Metals of surgical tools and implants, added to :data:`projectors.materials.MATERIALS` on import.

Nominal compositions by mass and densities of the grades (a material already
registered under the same name, e.g. by the projector, is kept).
"""

from projectors.materials import MATERIALS, Material, register_material

METALS = (
    Material("stainless_steel", {"Fe": 0.655, "Cr": 0.17, "Ni": 0.12, "Mo": 0.025, "Mn": 0.02, "Si": 0.01}, 8.0,
             "AISI 316L nominal composition"),
    Material("nitinol", {"Ni": 0.55, "Ti": 0.45}, 6.45, "NiTi shape-memory alloy, ~55 wt% Ni"),
    Material("titanium_alloy", {"Ti": 0.90, "Al": 0.06, "V": 0.04}, 4.43, "Ti-6Al-4V (ASTM F136)"),
    Material("cobalt_chrome", {"Co": 0.64, "Cr": 0.28, "Mo": 0.06, "Ni": 0.01, "Fe": 0.01}, 8.3,
             "CoCrMo (ASTM F75), femoral heads and stems"),
)

for _m in METALS:
    if _m.name not in MATERIALS:
        register_material(_m)
