"""``python -m synthex.vtt create|serve|report`` (the same as ``synthex vtt ...``)."""

from synthex.vtt.cli import vtt

vtt(prog_name="python -m synthex.vtt")
