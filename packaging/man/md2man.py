#!/usr/bin/env python3
"""Turns the tuner pages in docs/tuners/*.md into man pages wasmtune-NAME.7,
and docs/configuration.md into wasmtune.toml.5.

Handles the Markdown those pages use: one `#` title, `##` sections,
paragraphs, `-` lists, pipe tables, fenced code and inline `code`/**bold**.
Run from anywhere: python3 packaging/man/md2man.py
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "docs" / "tuners"
TARGET = ROOT / "packaging" / "man"


def escape(text: str) -> str:
    text = text.replace("\\", "\\e")
    # A line starting with . or ' would be a roff request.
    return re.sub(r"^([.'])", r"\\&\1", text)


def inline(text: str) -> str:
    text = escape(text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    return text.replace("−", "\\-")


def convert(name: str, markdown: str, section: int = 7, manual: str = "wasmtune tuners", page: str = "") -> str:
    page = page or f"wasmtune-{name}"
    lines = markdown.splitlines()
    out = [f'.TH {escape(page.upper())} {section} "" "wasmtune" "{manual}"']
    summary = []
    i = 0
    while i < len(lines) and not lines[i].startswith("# "):
        i += 1
    i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    # The first paragraph names the page; anything else before the first
    # section is its description.
    while i < len(lines) and lines[i].strip() and not lines[i].startswith(("## ", "```")):
        summary.append(lines[i].strip())
        i += 1
    out += [".SH NAME", f"{escape(page)} \\- {inline(' '.join(summary))}"]
    rest = i
    while rest < len(lines) and not lines[rest].strip():
        rest += 1
    if rest < len(lines) and not lines[rest].startswith("## "):
        out.append(".SH DESCRIPTION")
    paragraph = []

    def flush():
        if paragraph:
            out.extend([".PP", inline(" ".join(paragraph))])
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            flush()
            out.append(f".SS {escape(line[4:].strip())}")
        elif line.startswith("## "):
            flush()
            out.append(f".SH {escape(line[3:].strip().upper())}")
        elif line.startswith("```"):
            flush()
            out += [".PP", ".nf", ".RS 4"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(escape(lines[i]))
                i += 1
            out += [".RE", ".fi"]
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            header, body = rows[0], rows[1:]
            for row in body:
                out.append(f".TP\n{inline(row[0])}")
                out.append(inline("; ".join(row[1:])))
            del header
        elif line.startswith("- "):
            flush()
            item = [line[2:].strip()]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            out += [".IP \\(bu 2", inline(" ".join(item))]
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    out += [".SH SEE ALSO", "wasmtune(8)"]
    return "\n".join(out) + "\n"


def main() -> int:
    pages = sorted(SOURCE.glob("*.md"))
    if not pages:
        print(f"no pages in {SOURCE}", file=sys.stderr)
        return 1
    for page in pages:
        target = TARGET / f"wasmtune-{page.stem}.7"
        target.write_text(convert(page.stem, page.read_text()))
        print(target.relative_to(ROOT))
    config = ROOT / "docs" / "configuration.md"
    target = TARGET / "wasmtune.toml.5"
    target.write_text(convert("toml", config.read_text(), 5, "wasmtune configuration", "wasmtune.toml"))
    print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
