"""certify.models.vnnlib: the competition subset of VNN-LIB, on the 30 shared mnistfc properties and on
small hand-written ones (every construct, and the refusals)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnistfc_data as M  # noqa: E402

from certify.errors import InvalidInputError, UnsupportedError  # noqa: E402
from certify.models.vnnlib import parse_vnnlib, violates  # noqa: E402


@pytest.mark.parametrize("eps", ["0.03", "0.05"])
def test_shared_properties_are_clipped_linf_balls_with_their_label(eps):
    for i in range(M.IMAGES):
        prop = M.prop(f"prop_{i}_{eps}.vnnlib")
        assert prop.num_inputs == 784 and prop.num_outputs == 10
        stated = int(prop.comments[0].split("label:")[1].strip(" ."))
        assert prop.label == stated
        assert len(prop.disjuncts) == 9
        centre, radius = prop.ball()
        assert abs(radius - float(eps)) < 1e-6
        assert ((centre >= 0) & (centre <= 1)).all()
        assert np.abs(np.maximum(centre - radius, 0) - prop.lower).max() < 1e-6
        assert np.abs(np.minimum(centre + radius, 1) - prop.upper).max() < 1e-6
        # the centre is classified as the label's class iff no Y_j >= Y_label there
        y = np.zeros(10)
        y[prop.label] = 1.0
        assert not violates(prop, y)
        y[(prop.label + 1) % 10] = 1.0
        assert violates(prop, y)  # a tie is a counterexample (>=)


def test_both_radii_share_the_image():
    for i in range(M.IMAGES):
        a, _ = M.prop(f"prop_{i}_0.03.vnnlib").ball()
        b, _ = M.prop(f"prop_{i}_0.05.vnnlib").ball()
        assert np.abs(a - b).max() < 1e-6


TEXT = """
; a comment
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (<= -1 X_1))   ; constant on the left
(assert (< X_1 2e-1))
(assert (or (and (>= Y_0 Y_2) (<= Y_1 3)) (and (>= (+ Y_1 (* 2 Y_2)) (- Y_0 1)))))
"""


def test_general_formula_in_disjunctive_normal_form():
    prop = parse_vnnlib("inline", TEXT)
    assert prop.lower.tolist() == [-0.5, -1.0] and prop.upper.tolist() == [0.5, 0.2]
    assert prop.label is None and prop.ball() is None
    assert len(prop.disjuncts) == 2
    (c1, d1), (c2, d2) = prop.disjuncts
    assert c1.tolist() == [[-1, 0, 1], [0, 1, 0]] and d1.tolist() == [0, 3]  # Y_2 - Y_0 <= 0, Y_1 <= 3
    assert c2.tolist() == [[1, -1, -2]] and d2.tolist() == [1]  # Y_0 - Y_1 - 2 Y_2 <= 1
    assert violates(prop, [1, 3, 0]) and not violates(prop, [5, 4, -1]) and violates(prop, [0, 0, 0])


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= Y_0 0))", UnsupportedError, "no lower or upper bound"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)", InvalidInputError, "unbalanced"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))(assert (>= (* Y_0 Y_0) 0))", UnsupportedError, "not linear"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))(assert (not (>= Y_0 0)))", UnsupportedError, "'not'"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (or (<= X_0 1) (>= X_0 0)))(assert (>= Y_0 0))", UnsupportedError, "several input boxes"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))(assert (>= Y_0 X_0))", UnsupportedError, "mixing"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 0))(assert (>= X_0 1))(assert (>= Y_0 0))", InvalidInputError, "empty input box"),
        ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))", UnsupportedError, "no output constraint"),
        ("(declare-const X_0 Real)(declare-const Y_1 Real)(assert (<= X_0 1))(assert (>= X_0 0))(assert (>= Y_1 0))", InvalidInputError, "must all be declared"),
    ],
)
def test_outside_the_subset_is_refused_with_the_reason(text, error, match):
    with pytest.raises(error, match=match):
        parse_vnnlib("inline", text)


def test_a_missing_file_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read"):
        parse_vnnlib(tmp_path / "missing.vnnlib")


HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
FORMULA = "(assert (>= Y_1 Y_0))\n"


@pytest.mark.parametrize(
    "box, match",
    [
        # beyond float64 (an OverflowError in float(Fraction)), on either side
        (BOX.replace("(<= X_1 1)", "(<= X_1 1e400)"), r"line 8: the upper bound of X_1 is 1\.000e\+400, beyond the float64 range"),
        (BOX.replace("(>= X_0 0)", "(>= X_0 -2.5e400)"), r"line 5: the lower bound of X_0 is -2\.500e\+400"),
        (BOX.replace("(<= X_0 1)", "(<= (* 1e-400 X_0) 1)"), r"line 6: the upper bound of X_0 is 1\.000e\+400"),
        # non-finite tokens
        (BOX.replace("(>= X_1 0)", "(>= X_1 nan)"), r"line 7 \(constraint on X_1\): 'nan' is not a finite number"),
        (BOX.replace("(<= X_0 1)", "(<= X_0 +inf)"), r"line 6 \(constraint on X_0\): '\+inf' is not a finite number"),
        (BOX.replace("(>= X_0 0)", "(>= X_0 -Infinity)"), r"line 5 \(constraint on X_0\): '-Infinity' is not a finite number"),
        # lower > upper: both lines
        (BOX.replace("(>= X_1 0)", "(>= X_1 2)"), r"empty input box at X_1: lower bound 2\.0 \(line 7\) > upper bound 1\.0 \(line 8\)"),
    ],
)
def test_unrepresentable_or_empty_bounds_are_input_errors_naming_the_variable_and_line(box, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_vnnlib("inline", HEAD + box + FORMULA)


@pytest.mark.parametrize("formula, match", [
    ("(assert (>= Y_1 1e400))", r"line 9: the constant of the constraint on Y_1 has magnitude 1\.000e\+400"),
    ("(assert (>= (* 1e999 Y_1) Y_0))", r"line 9: the coefficient of Y_1 has magnitude 1\.000e\+999"),
    ("(assert (>= Y_1 NaN))", r"line 9 \(constraint on Y_1\): 'NaN' is not a finite number"),
])
def test_unrepresentable_numbers_in_the_formula_are_input_errors(formula, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_vnnlib("inline", HEAD + BOX + formula + "\n")


def test_the_tightest_bound_wins_and_a_tiny_number_rounds_to_nearest():
    prop = parse_vnnlib("inline", HEAD + BOX + "(assert (<= X_0 0.5))\n(assert (>= X_1 1e-400))\n" + FORMULA)
    assert prop.lower.tolist() == [0.0, 0.0] and prop.upper.tolist() == [0.5, 1.0]


def test_an_unknown_symbol_names_its_line():
    with pytest.raises(UnsupportedError, match=r"line 9 \(constraint on Y_1\): unknown symbol 'Z_0'"):
        parse_vnnlib("inline", HEAD + BOX + "(assert (>= Y_1 Z_0))\n")
