"""Plain renderers for tables: GitHub Markdown, LaTeX (booktabs) and HTML.

A table is a header (list of strings) and rows (lists of strings); numbers are formatted by the
caller, so all three renderings print the same text.
"""

from __future__ import annotations

import html

import pandas as pd

# Unicode in labels and marks -> pdflatex-safe math (OT1 fonts print '<' and '>' wrongly too).
_LATEX_SYMBOLS = {"λ": r"$\lambda$", "†": r"$^\dagger$", "*": r"$^*$", "±": r"$\pm$", "×": r"$\times$",
                  "²": r"$^2$", "τ": r"$\tau$", "–": "--", "—": "---", "<": "$<$", ">": "$>$", "≤": r"$\leq$",
                  "≥": r"$\geq$", "−": "$-$"}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def fmt(value: float, digits: int = 4, missing: str = "–") -> str:
    """`value` with `digits` decimals; NaN/None as `missing`."""
    if pd.isna(value):
        return missing
    return f"{value:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value for reading: 3 decimals, two significant digits below 0.01, NaN as a dash."""
    if pd.isna(p):
        return "–"
    return f"{p:.3f}" if p >= 0.01 else f"{p:.1e}"


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in out)


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A GitHub pipe table; the first `text_columns` columns are left-aligned, the rest right."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"

    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)]) + "\n"


def latex_table(header: list[str], rows: list[list[str]], caption: str, label: str, notes: str = "") -> str:
    """A floating `table` with a booktabs `tabular`, the caption above and notes below."""
    def line(cells):
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", r"\toprule",
             line(header), r"\midrule", *(line(r) for r in rows), r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", rf"{{\footnotesize {latex_escape(notes)}\par}}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"
