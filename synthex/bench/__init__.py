"""Benchmarks behind ``synthex bench``.

    study      the sim-to-real study's sources, target (user data or the rendered reference domain),
               presets and the data steps (renders, target split, pix2pix, CycleGAN)
    sim2real   the same model trained on each source, tested on the target's test split
    realism    FID / KID of each source against the target's test images
    steps      resumable steps: a rerun skips what is done, a failed step says which
    report     Markdown tables and figures

Imports training (torch) lazily, inside the functions that need it.
"""
