"""The report's totals check: a table that does not add up to the total, or a row whose
figures break an identity, is named in the report's problems."""

from __future__ import annotations

from backend.services.stats import Figures, Row, _checked


def _row(code: str, received: int, cases: int, answered: int) -> Row:
    figures = Figures(
        received=received,
        cases=cases,
        answered=answered,
        in_progress=cases - answered,
        normal=cases,
        duplicates=received - cases,
    )
    return Row(code, code, figures)


def test_tables_that_add_up_have_no_problems() -> None:
    rows = [_row("a", 5, 4, 1), _row("b", 3, 3, 3)]
    total = _row("all", 8, 7, 4).figures  # the two rows added by hand
    assert total.received == 8 and total.duplicates == 1 and total.answered == 4
    assert _checked(total, rows, rows[::-1]) == []
    assert _checked(Figures(), [], []) == []


def test_a_table_off_by_one_is_named() -> None:
    rows = [_row("a", 5, 4, 1), _row("b", 3, 3, 3)]
    total = _row("all", 8, 7, 4).figures  # the two rows added by hand
    assert _checked(total, rows, rows[:1]) == ["a table does not add up to the total"]
    assert _checked(total, rows, []) == ["a table does not add up to the total"]


def test_a_broken_identity_is_named_with_its_row() -> None:
    broken = Row("14812", "Phường X", Figures(received=2, cases=2, answered=1, normal=2))
    problems = _checked(broken.figures, [broken])
    assert problems == [
        "cases = answered + in progress",
        "14812: cases = answered + in progress",
    ]
