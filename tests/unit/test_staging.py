"""The ISCL/EORTC grouping table of shared/conventions.md, row by row, plus NX and sub-letters."""

import pytest

from adapter.mapping.staging import derive_group, stage_conflict, written_agrees

ROWS = [
    # (T, N, M, B, expected group) - every combination the conventions table allows
    *[("T1", "N0", "M0", b, "IA") for b in ("B0", "B1")],
    *[("T2", "N0", "M0", b, "IB") for b in ("B0", "B1")],
    *[(t, n, "M0", b, "IIA") for t in ("T1", "T2") for n in ("N1", "N2") for b in ("B0", "B1")],
    *[("T3", n, "M0", b, "IIB") for n in ("N0", "N1", "N2") for b in ("B0", "B1")],
    *[("T4", n, "M0", "B0", "IIIA") for n in ("N0", "N1", "N2")],
    *[("T4", n, "M0", "B1", "IIIB") for n in ("N0", "N1", "N2")],
    *[(t, n, "M0", "B2", "IVA1") for t in ("T1", "T2", "T3", "T4") for n in ("N0", "N1", "N2")],
    *[(t, "N3", "M0", b, "IVA2") for t in ("T1", "T2", "T3", "T4") for b in ("B0", "B1", "B2")],
    *[
        (t, n, "M1", b, "IVB")
        for t in ("T1", "T2", "T3", "T4")
        for n in ("N0", "N1", "N2", "N3")
        for b in ("B0", "B1", "B2")
    ],
]


@pytest.mark.parametrize(("t", "n", "m", "b", "group"), ROWS)
def test_every_row_of_the_conventions_table(t: str, n: str, m: str, b: str, group: str) -> None:
    assert derive_group(t, n, m, b) == group


def test_all_combinations_land_in_exactly_one_group() -> None:
    combos = [
        (t, n, m, b)
        for t in ("T1", "T2", "T3", "T4")
        for n in ("N0", "N1", "N2", "N3", "NX")
        for m in ("M0", "M1")
        for b in ("B0", "B1", "B2")
    ]
    assert all(derive_group(*c) is not None for c in combos)


@pytest.mark.parametrize(
    ("t", "n", "m", "b", "group"),
    [
        ("T2", "NX", "M0", "B1", "IIA"),  # conventions: NX groups with N1-2
        ("T4", "NX", "M0", "B2", "IVA1"),
        ("T4", "NX", "M0", "B0", "IIIA"),
        ("T1", "NX", "M0", "B0", "IIA"),
    ],
)
def test_nx_groups_with_n1_n2(t: str, n: str, m: str, b: str, group: str) -> None:
    assert derive_group(t, n, m, b) == group


def test_sub_letters_never_change_the_group() -> None:
    assert derive_group("T1a", "N1b", "M0", "B0a") == derive_group("T1", "N1", "M0", "B0")
    assert derive_group("T2b", "N0", "M0", "B1b") == "IB"


def test_missing_category_gives_no_group() -> None:
    assert derive_group("T4", None, "M0", "B2") is None


def test_coarse_written_groups_agree_with_finer_derived_ones() -> None:
    assert written_agrees("IVA", "IVA1")
    assert written_agrees("IV", "IVB")
    assert written_agrees("III", "IIIB")
    assert not written_agrees("IIA", "IVA1")
    assert not written_agrees("IVA", "IVB")


def test_conflict_is_reported_naming_both_and_not_fixed() -> None:
    derived, conflict = stage_conflict({"t": "T4", "n": "N0", "m": "M0", "b": "B2", "group": "IIA"})
    assert derived == "IVA1"
    assert conflict is not None
    assert "IIA" in conflict and "IVA1" in conflict and "T4 N0 M0 B2" in conflict


def test_written_coarse_group_is_no_conflict() -> None:
    derived, conflict = stage_conflict({"t": "T4", "n": "NX", "m": "M0", "b": "B2", "group": "IVA"})
    assert (derived, conflict) == ("IVA1", None)
