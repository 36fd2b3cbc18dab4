"""mkdocs hooks of the synthex docs site (registered in ``mkdocs.yml``).

1. **Config reference.** The marker ``<!-- synthex:config-reference -->`` in a page is
   replaced by a table of every render-config key, built from
   :func:`synthex.config.schema_reference`, so the table cannot drift from the schema; the
   marker ``<!-- synthex:subject-reference -->`` by a table of every key of every subject source,
   built from the registry ``synthex.subjects.SOURCES`` (each entry's typed model).
2. **Files of the repository outside docs/.** A relative link from a page to a file of the
   repository outside ``docs/`` (``![speed](../benchmarks/results/overlay_pelvis_ct.png)``)
   works on GitHub as written; for the site the file is copied to ``_repo/<path>`` and the
   link rewritten. A link to a repository file that does not exist is a warning, so
   ``mkdocs build --strict`` fails on it.
3. **reST in docstrings.** Docstrings cite objects as ``:class:`~pkg.mod.Name```; the
   rendered API pages get a cross-reference (autorefs, optional) instead of the raw role, and
   a paragraph ending in ``::`` (reST's literal-block marker) ends in one colon.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import sys
import typing
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.synthex")

REPO = Path(__file__).resolve().parents[1]

CONFIG_MARKER = "<!-- synthex:config-reference -->"
SUBJECT_MARKER = "<!-- synthex:subject-reference -->"
REPO_PREFIX = "_repo"  # site folder of repository files outside docs/

# [text](target) or ![alt](target "title"); the target has no spaces
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^(```|~~~)")
_LITERAL_COLONS = re.compile(r"([^:\s])::</p>")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):<code>(~?)([\w.]+)</code>")


# ---------------------------------------------------------------------------
# 1. config reference


def _fmt_default(value) -> str:
    try:
        text = json.dumps(value)
    except TypeError:
        text = repr(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _this_checkout(module: str):
    """Import ``module`` from this checkout, not from another synthex installed in the environment
    (mkdocs restores sys.path after loading a hook, so the path is put first here, at call time)."""
    import importlib

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    mod = importlib.import_module(module)
    where = Path(mod.__file__).resolve()
    if REPO not in where.parents:
        raise RuntimeError(f"docs hook: {module} was imported from {where}, not from {REPO}")
    return mod


def config_reference_table() -> str:
    """The Markdown table of every config key: ``| `key` | `default` | doc |``."""
    schema_reference = _this_checkout("synthex.config").schema_reference
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in schema_reference():
        lines.append(f"| `{key}` | {_cell(_fmt_default(default))} | {_cell(doc)} |")
    return "\n".join(lines)


def _entry_rows(model, prefix: str = ""):
    """(key, default, doc) of a subject entry model; nested entry models (deform, lesions) as dotted keys."""
    from pydantic import BaseModel

    for name, f in model.model_fields.items():
        if name == "source" or (name == "path" and not f.is_required() and f.get_default() == ""):
            continue  # the tag; a path the source fills in itself (bundled_pelvis)
        key = f"{prefix}{name}"
        default = "(required)" if f.is_required() else f.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        yield key, default, f.description or ""
        nested = [a for a in typing.get_args(f.annotation) or (f.annotation,)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            yield from _entry_rows(nested[0], f"{key}.")


def subject_reference_table() -> str:
    """The Markdown table of every subject source and its keys: ``| `source` | `key` | `default` | doc |``."""
    sources = _this_checkout("synthex.subjects").SOURCES
    lines = ["| `source` | key | default | meaning |", "|---|---|---|---|"]
    for name, src in sources.items():
        lines.append(f"| `{name}` | | | {_cell(src.doc)} |")
        for key, default, doc in _entry_rows(src.entry):
            shown = default if default == "(required)" else _fmt_default(default)
            lines.append(f"| | `{key}` | {_cell(shown)} | {_cell(doc)} |")
    return "\n".join(lines)


def expand_config_reference(markdown: str) -> str:
    """``markdown`` with the config- and subject-reference markers replaced by the generated tables."""
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference_table())
    if SUBJECT_MARKER in markdown:
        markdown = markdown.replace(SUBJECT_MARKER, subject_reference_table())
    return markdown


# ---------------------------------------------------------------------------
# 2. links to repository files outside docs/


def _outside_targets(markdown: str):
    """(match, target) of every relative link outside fenced code blocks."""
    in_fence = False
    offset = 0
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line.lstrip()):
            in_fence = not in_fence
        elif not in_fence:
            for m in _LINK.finditer(line):
                target = m.group(2)
                if "://" in target or target.startswith(("#", "/", "mailto:")):
                    continue
                yield offset + m.start(), offset + m.end(), m
        offset += len(line)


def _repo_path(page_src: str, target: str) -> str | None:
    """The repository path a link from docs/``page_src`` points to, if it leaves docs/."""
    path = target.split("#", 1)[0]
    if not path:
        return None
    resolved = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), path))
    if resolved.startswith("docs/") or resolved == "docs":
        return None
    return resolved


def on_files(files, config):
    """Add every repository file outside docs/ that a page links to."""
    from mkdocs.structure.files import File

    docs_dir = Path(config["docs_dir"])
    added = set()
    for f in list(files.documentation_pages()):
        text = Path(docs_dir, f.src_path).read_text(encoding="utf-8")
        for _, _, m in _outside_targets(text):
            rel = _repo_path(f.src_uri, m.group(2))
            if rel is None or rel.startswith("../") or rel in added:
                continue
            src = REPO / rel
            if src.is_file():
                files.append(File.generated(config, f"{REPO_PREFIX}/{rel}", abs_src_path=str(src)))
                added.add(rel)
    return files


def _rewrite_repo_links(markdown: str, page) -> str:
    out, last = [], 0
    for start, end, m in _outside_targets(markdown):
        target = m.group(2)
        rel = _repo_path(page.file.src_uri, target)
        if rel is None:
            continue
        if rel.startswith("../") or not (REPO / rel).is_file():
            log.warning("%s links to '%s', which is not a file of the repository", page.file.src_uri, target)
            continue
        anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
        new = posixpath.relpath(f"{REPO_PREFIX}/{rel}", posixpath.dirname(page.file.src_uri) or ".") + anchor
        out += [markdown[last:start], m.group(1), new, m.group(3)]
        last = end
    out.append(markdown[last:])
    return "".join(out)


def on_page_markdown(markdown, page, config, files):
    if CONFIG_MARKER in markdown or SUBJECT_MARKER in markdown:
        markdown = expand_config_reference(markdown)
    return _rewrite_repo_links(markdown, page)


# ---------------------------------------------------------------------------
# 3. Sphinx roles in rendered docstrings


def _role_to_autoref(m: re.Match) -> str:
    short, identifier = m.group(1), m.group(2)
    title = identifier.rsplit(".", 1)[-1] if short else identifier
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def on_page_content(html, page, config, files):
    html = _ROLE.sub(_role_to_autoref, html)
    # reST's "text::" before a literal block: one colon in Markdown
    return _LITERAL_COLONS.sub(r"\1:</p>", html)
