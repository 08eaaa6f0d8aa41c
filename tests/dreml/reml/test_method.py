"""`--method auto`: the choice and its reason."""

from dreml.reml.method import EXACT_MAX_N, choose_method, exact_bytes


def test_choose_method__forced():
    assert choose_method("randomised", 10, 1) == ("randomised", "method=randomised requested")
    assert choose_method("exact", 10**6, 1)[0] == "exact"


def test_choose_method__auto_by_size_and_memory():
    assert choose_method("auto", EXACT_MAX_N, 2, available=2**40)[0] == "exact"
    method, reason = choose_method("auto", EXACT_MAX_N + 1, 2, available=2**40)
    assert method == "randomised" and f"n = {EXACT_MAX_N + 1} > {EXACT_MAX_N}" in reason
    method, reason = choose_method("auto", 1000, 2, available=exact_bytes(1000, 2))
    assert method == "randomised" and "more than 50%" in reason
    assert exact_bytes(1000, 2) == 8 * 1000 * 1000 * 8
