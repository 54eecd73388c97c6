# SPDX-License-Identifier: Apache-2.0
"""Prints the keygate.conf key table of docs/configuration.md from release/kg_config.c
(kg_config_keys).
Usage: /usr/bin/python3 scripts/config-table.py --update   (rewrites the table in docs/configuration.md)"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROW = re.compile(r'\{"(\w+)", KG_CONF_T_\w+, "([^"]*)", "[^"]*",\s*((?:"(?:[^"\\]|\\.)*"\s*)+),\s*F\(')


def table():
    src = (ROOT / "release" / "kg_config.c").read_text()
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, doc in ROW.findall(src):
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', doc)).replace("|", "\\|")
        rows.append("| `%s` | %s | %s |" % (key, "`%s`" % default if default else "—", text))
    return "\n".join(rows) + "\n"


def main():
    t = table()
    if "--update" not in sys.argv:
        sys.stdout.write(t)
        return
    doc = ROOT / "docs" / "configuration.md"
    text = doc.read_text()
    begin, end = "<!-- config-keys:begin -->\n", "<!-- config-keys:end -->"
    a, b = text.index(begin) + len(begin), text.index(end)
    doc.write_text(text[:a] + t + text[b:])


if __name__ == "__main__":
    main()
