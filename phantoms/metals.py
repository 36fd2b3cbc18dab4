"""Metals of surgical tools and implants.

They live with the other materials in :data:`projectors.materials.MATERIALS`
(one definition each: 316L stainless steel, NiTi, Ti-6Al-4V ``titanium_alloy``,
Co-Cr-Mo ``cocr``, pure titanium); this module names the ones tools and
implants use.
"""

from projectors.materials import MATERIALS

METALS = tuple(MATERIALS[name] for name in ("stainless_steel", "nitinol", "titanium_alloy", "cocr", "titanium"))
