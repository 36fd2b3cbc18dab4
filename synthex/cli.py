"""The ``synthex`` command line. Commands import their heavy modules lazily."""

from __future__ import annotations

import importlib

import click

from synthex._version import __version__

# command name -> "module:attribute"; each module is imported only when its command runs
# (or when `synthex --help` lists it), so `synthex --help` stays fast.
COMMANDS = {
    "bench": "synthex.commands.bench:bench",
    "demo": "synthex.commands.demo:demo",
    "drr": "synthex.commands.drr:drr",
    "train-downstream": "synthex.commands.train:train_downstream",
    "evaluate": "synthex.commands.evaluate:evaluate",
    "predict": "synthex.commands.predict:predict",
    "export": "synthex.commands.export:export",
    "info": "synthex.commands.info:info",
    "render": "synthex.commands.render:render",
    "validate": "synthex.commands.validate:validate",
    "vtt": "synthex.vtt.cli:vtt",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthex")
def cli():
    """synthex: physics-based synthetic X-ray data from CT volumes and phantoms."""


def main():
    cli()
