"""Geometry, volumes, materials, ray-casting kernels and X-ray physics. Imports no other synthex package."""
