"""The faults/attacks summary line (tests/outcomes.py) counts what each test's teardown report carries: under make
test the tests run in pytest-xdist workers, whose counts reach the line only that way."""

from __future__ import annotations

import pytest

from tests import outcomes


def report(nodeid: str, when: str, outcome: str = "passed", counts: dict[str, int] | None = None,
           attack: bool = False) -> pytest.TestReport:
    props = [(outcomes.KEY, counts)] if counts is not None else []
    return pytest.TestReport(nodeid=nodeid, location=(nodeid, 0, nodeid), keywords={"attack": 1} if attack else {},
                             outcome=outcome, longrepr=None, when=when, user_properties=props)


def test_the_line_sums_counts_from_teardown_reports_and_counts_calls() -> None:
    fault, attack = "tests/system/fault/test_x.py::test_a", "tests/security/test_y.py::test_b"
    reports = [report(fault, "call"), report(fault, "teardown", counts={"lost": 1, "server_errors": 2}),
               report(attack, "call", "failed", attack=True),
               report(attack, "teardown", counts={"lost": 0, "server_errors": 3}),
               report("tests/security/test_y.py::test_c", "call", "skipped", attack=True)]
    line = "faults: 1/1 survived, attacks: 0/1 refused, jobs lost: 1, server errors: 5"
    assert outcomes.summary_line(reports) == line
    assert outcomes.summary_line([report("tests/api/test_z.py::test_d", "call")]) is None


def test_take_hands_over_the_counts_once() -> None:
    outcomes.STATS["lost"] += 2
    assert outcomes.take() == {"lost": 2, "server_errors": 0}
    assert outcomes.take() == {"lost": 0, "server_errors": 0}
