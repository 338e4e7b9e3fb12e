"""MATH's answer normalisation (Hendrycks et al. 2021, `math_equivalence.py`), as the paper scores.

`strip_string` and `is_equiv` follow the MATH repository's `_strip_string` / `is_equiv` step by
step (re-implemented here; verl's `reward_score/math.py`, which the paper's code uses, is the same):
drop line breaks, `\\!`, `\\left`/`\\right`; `\\\\` -> `\\`; `tfrac`/`dfrac` -> `frac`; remove
`^{\\circ}` / `^\\circ` (degrees), `\\$`, `\\%`, and units written as a trailing `\\text{ ...}`
(with a space after the brace); " ." -> " 0.", "{." -> "{0.", a leading "." gets a "0"; drop a
short left-hand side ("k = 5" -> "5"); `\\sqrt3` -> `\\sqrt{3}`; remove spaces; `\\frac12` ->
`\\frac{1}{2}`; "0.5" -> `\\frac{1}{2}`; "a/b" of integers -> `\\frac{a}{b}`. Two answers are equal
when their normalised strings are identical. Pure string code: no eval, no sympy.
"""

from __future__ import annotations

from typing import Optional


def _fix_fracs(string: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72} (MATH's _fix_fracs)."""
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[:1] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    """"3/4" -> \\frac{3}{4} when both sides are plain integers."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    """"5 \\text{ cm}" -> "5 " (MATH: "\\text{ " only ever starts units); two of them is an error."""
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:
            raise ValueError("more than one '\\text{ ' unit")  # MATH asserts here; is_equiv catches it
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    """\\sqrt3 -> \\sqrt{3}."""
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[:1] != "{" and split:
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """MATH's `_strip_string`: the normalised form of an answer (see the module docstring)."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "")  # MATH removes "\\%" only (its second line, "\%", is the same string)
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv(str1: Optional[str], str2: Optional[str]) -> bool:
    """MATH's `is_equiv`: normalised strings identical (raw strings if normalising fails)."""
    if str1 is None or str2 is None:
        return str1 is None and str2 is None
    try:
        return strip_string(str1) == strip_string(str2)
    except (ValueError, IndexError):
        return str1 == str2
