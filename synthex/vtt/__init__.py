"""Visual Turing test: a blinded web study in which experts tell real from synthetic X-rays.

Three steps, one CLI command each (``synthex vtt create | serve | report``):

- :mod:`synthex.vtt.sources` reads image folders (PNG, TIFF, DICOM) and synthex datasets;
- :mod:`synthex.vtt.study` draws a balanced, seeded sample, blinds it (opaque random ids,
  re-encoded metadata-free PNGs) and keeps the key apart from what is served;
- :mod:`synthex.vtt.store` keeps the answers in SQLite as they are given;
- :mod:`synthex.vtt.app` is the Flask web app raters use;
- :mod:`synthex.vtt.stats` and :mod:`synthex.vtt.report` turn answers into accuracy,
  sensitivity, specificity (exact CIs), a test against chance, Fleiss' kappa and ROC.
"""


class VTTError(ValueError):
    """A visual Turing test input or study that cannot be used (the message says why)."""


__all__ = ["VTTError"]
