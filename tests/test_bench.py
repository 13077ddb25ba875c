"""The benchmark's gate and its alternation (in-process: `make bench` itself runs the processes)."""

from __future__ import annotations

from tools.bench.bench import alternated, ratio_row


def test_the_gate_is_the_median_of_the_rounds_ratios_with_their_spread() -> None:
    hook, baseline = [0.130, 0.120, 0.300], [0.100, 0.100, 0.100]  # one noisy round: 3.0x
    row = ratio_row("warm", hook, baseline, 1.25)
    assert (row.baseline, row.hook, row.ratio, row.passed) == ("100.0 ms", "130.0 ms", "1.300x (1.200–3.000x)", False)
    assert ratio_row("warm", hook, baseline, 1.30).passed
    assert ratio_row("warm", hook, baseline, None).gate == "(information)"
    assert ratio_row("warm", hook, baseline, None).passed


def test_milliseconds_never_decide() -> None:
    slow_machine = ratio_row("burst", [5.0, 5.2, 5.1], [4.6, 4.7, 4.6], 1.30)  # seconds: far past any budget
    fast_regression = ratio_row("burst", [0.005, 0.005, 0.005], [0.002, 0.002, 0.002], 1.30)
    assert (slow_machine.passed, fast_regression.passed) == (True, False)


def test_rounds_alternate_which_contender_goes_first() -> None:
    order: list[str] = []

    def measure(name: str) -> float:
        order.append(name)
        return float(len(order))

    results = alternated(3, ["hook", "relay", "fixed"], measure)
    assert order == ["hook", "relay", "fixed", "relay", "fixed", "hook", "fixed", "hook", "relay"]
    assert results == {"hook": [1.0, 6.0, 8.0], "relay": [2.0, 4.0, 9.0], "fixed": [3.0, 5.0, 7.0]}
