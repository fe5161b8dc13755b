"""report.html: a report folder's report.md as ONE self-contained HTML file.

Over SSH there is no browser next to the runs: copy this one file from the cluster and open it
anywhere. Python-Markdown renders report.md (its ``tables`` extension turns the Markdown tables
into HTML tables, ``md_in_html`` renders the Markdown inside ``<details>``), and a tree
processor replaces every reference to a file of the report folder by the file itself, as a
``data:`` URI: figures (PNG) are embedded images, and the links to the tables (CSV, LaTeX,
Markdown) and figures (PDF) become downloads (``download`` attribute) that need nothing else.
Nothing is fetched from the network (no scripts, fonts or style sheets from elsewhere).
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from urllib.parse import unquote, urlparse

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

STYLE = """
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
th { background: #eee; }
img { max-width: 100%; }
pre, code { background: #f4f4f4; }
pre { padding: 0.5em; overflow-x: auto; }
"""

_TYPES = {".md": "text/markdown", ".tex": "application/x-tex", ".csv": "text/csv"}


def data_uri(path: Path) -> str:
    """The file as a ``data:`` URI (base64)."""
    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


class _EmbedFiles(Treeprocessor):
    """Every ``<img src>`` and ``<a href>`` naming a file of the report folder -> that file, embedded."""

    def __init__(self, md, folder: Path):
        super().__init__(md)
        self.folder = folder.resolve()

    def _local(self, ref: str | None) -> Path | None:
        if not ref or urlparse(ref).scheme or ref.startswith(("#", "/")):
            return None
        path = (self.folder / unquote(ref)).resolve()
        return path if path.is_file() and self.folder in path.parents else None

    def run(self, root):
        for img in root.iter("img"):
            path = self._local(img.get("src"))
            if path is not None:
                img.set("src", data_uri(path))
        for a in root.iter("a"):
            path = self._local(a.get("href"))
            if path is not None:
                a.set("href", data_uri(path))
                a.set("download", path.name)
        return root


class EmbedFiles(Extension):
    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def extendMarkdown(self, md):
        md.treeprocessors.register(_EmbedFiles(md, self.folder), "embed_files", 0)


def report_html(markdown_text: str, folder: Path, title: str = "Run report") -> str:
    """The HTML page of ``markdown_text`` (a report.md), with the files of ``folder`` it names embedded."""
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html", EmbedFiles(folder)],
                             output_format="html")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_report_html(report_md: Path, title: str = "Run report") -> Path:
    """Write ``report.html`` next to ``report_md`` (atomically) and return its path."""
    from plasticity_lab.recording import atomic_write_text  # torch-free: the one atomic writer

    report_md = Path(report_md)
    out = report_md.with_suffix(".html")
    atomic_write_text(out, report_html(report_md.read_text(), report_md.parent, title))
    return out
