# SPDX-License-Identifier: Apache-2.0
"""Writes keygate's man pages (roff) from docs/man/*.md, a small Markdown subset, so that the
pages have one source in the repository. keygate.conf(5)'s list of keys comes from
release/kg_config.c (kg_config_keys), the table scripts/config-table.py puts in docs/configuration.md, so
the three can never drift apart.

Usage: /usr/bin/python3 scripts/gen-man.py OUTDIR [PAGE.md ...]   (default: every docs/man/*.md)

Markdown subset: a front matter block (name, section, title, date), '# NAME' -> .SH,
'## Sub' -> .SS, paragraphs, '- ' bullets, 'term' followed by ': definition' lines -> .TP,
fenced ``` blocks -> no-fill examples, `code` and **bold** -> bold, *italic* -> italic, and the
directive '<!-- config-keys -->' -> one .TP entry per keygate.conf key.
"""
import importlib.util
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_keys():
    """[(key, default, meaning)] from release/kg_config.c through scripts/config-table.py."""
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config-table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = (ROOT / "release" / "kg_config.c").read_text()
    rows = []
    for key, default, doc in mod.ROW.findall(src):
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', doc))
        rows.append((key, default, text.replace('\\"', '"')))
    return rows


def escape(text):
    """Roff-escapes plain text (no inline markup)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def inline(text):
    """Escapes text and turns `code`, **bold** and *italic* into fonts."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*", text):
        out.append(escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + escape(m.group(2)) + "\\fR")
        else:
            out.append("\\fI" + escape(m.group(3)) + "\\fR")
        pos = m.end()
    out.append(escape(text[pos:]))
    line = "".join(out)
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def render(md):
    lines = md.splitlines()
    meta = {}
    if lines and lines[0] == "---":
        end = lines.index("---", 1)
        for ln in lines[1:end]:
            k, _, v = ln.partition(":")
            meta[k.strip()] = v.strip()
        lines = lines[end + 1:]
    name, section = meta["name"], meta["section"]
    out = [f'.TH "{name.upper()}" "{section}" "{meta.get("date", "")}" "keygate" "{meta.get("manual", "keygate manual")}"',
           ".SH NAME", f"{escape(name)} \\- {escape(meta['title'])}"]
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.extend(inline(p) for p in para)
            para.clear()

    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("```"):
            flush()
            out += [".PP", ".RS 2", ".nf"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body = escape(lines[i])
                out.append("\\&" + body if body else "")
                i += 1
            out += [".fi", ".RE"]
        elif ln.startswith("## "):
            flush()
            out.append(".SS " + inline(ln[3:]))
        elif ln.startswith("# "):
            flush()
            out.append(".SH " + inline(ln[2:].upper()))
        elif ln.strip() == "<!-- config-keys -->":
            flush()
            for key, default, doc in config_keys():
                out += [".TP", "\\fB" + escape(key) + "\\fR" + (" (default: " + escape(default) + ")" if default else ""),
                        inline(doc)]
        elif ln.startswith("- "):
            flush()
            item = [ln[2:]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            out += [".IP \\(bu 2", inline(" ".join(item))]
        elif i + 1 < len(lines) and lines[i + 1].startswith(": ") and ln.strip():
            flush()
            out += [".TP", inline(ln)]
            i += 1
            defn = [lines[i][2:]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                defn.append(lines[i].strip())
            out.append(inline(" ".join(defn)))
        elif not ln.strip():
            flush()
        else:
            para.append(ln.strip())
        i += 1
    flush()
    return f"{name}.{section}", "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = pathlib.Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    pages = [pathlib.Path(p) for p in sys.argv[2:]] or sorted((ROOT / "docs" / "man").glob("*.md"))
    for page in pages:
        fname, text = render(page.read_text())
        (outdir / fname).write_text(text)


if __name__ == "__main__":
    main()
