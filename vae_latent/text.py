"""Strings from files, paths and settings, escaped for the sink each goes to.

A run folder, config or checkpoint may come from someone else, so any string read from one (a
folder name, an error text, a dataset name) is data. Each sink has its own escaping: one
terminal or log line, a spreadsheet cell, Markdown, JSON inside an HTML ``<script>``, and a
matplotlib label.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from vae_latent.files import shown

# Control characters, line and paragraph separators, and the bidirectional overrides that can
# make a line display as something else.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def user_line(text: object) -> str:
    """A message for the user: one line, with a held run directory shown by its name."""
    return one_line(shown(text))


def one_line(text: object) -> str:
    """``text`` as one printable line: control characters (a newline, an escape sequence) and
    undecodable bytes (a non-UTF-8 path) shown as backslash escapes."""
    s = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


# OWASP's list: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula gets a
    leading ``'`` (OWASP's CSV-injection advice); numbers and None pass unchanged."""
    if not isinstance(value, str):
        return value
    value = one_line(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


# Every character Markdown or inline HTML reads as syntax but ``_``, which is literal inside a
# word (fashion_mnist) and at worst italicises text around it elsewhere.
_MARKDOWN = re.compile(r"([\\`*{}\[\]()<>#+!|~&$])")


def markdown_text(text: object) -> str:
    """``text`` as literal Markdown on one line: what Markdown or inline HTML could read as
    syntax (``<script>``, ``[link](...)``, a table's ``|``) backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", one_line(text))


def markdown_code(text: object) -> str:
    """``text`` as a Markdown code span, on one line, whatever backticks it holds."""
    s = one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def script_json(data: Any) -> str:
    """JSON that stays data inside an HTML ``<script>`` element: ``<``, ``>`` and ``&`` as
    ``\\u`` escapes, so no ``</script>`` or ``<!--`` can reach the HTML parser's script-data
    states (escaping ``</`` alone leaves ``<!--<script>``), and the line separators too."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def plot_text(text: object) -> str:
    """A matplotlib label: one line, and no ``$`` that would start mathtext."""
    return one_line(text).replace("$", r"\$")


class OneLineFormatter(logging.Formatter):
    """A log formatter whose message is one line (``one_line``): a path or an error text from a
    file cannot forge log lines; a traceback, where one is logged, follows as usual."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = one_line(shown(record.message))
        return super().formatMessage(record)
