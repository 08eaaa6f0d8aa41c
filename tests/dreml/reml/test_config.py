"""FitConfig: validation at construction and the JSON round trip."""

import json

import pytest

from dreml.reml import FitConfig


def test_fit_config__json_round_trip():
    config = FitConfig(n_probes=17, seed=3, exact=True, worker_dtype="float32")
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"n_probes": 0}, "n_probes must be a positive integer"),
        ({"slq_probes": 1.5}, "slq_probes must be a positive integer"),
        ({"max_iter": True}, "max_iter must be a positive integer"),
        ({"precond_rank": -1}, "precond_rank must be a non-negative integer"),
        ({"pcg_tol": 0.0}, "pcg_tol must lie in"),
        ({"tol_theta": -1e-3}, "tol_theta must be positive"),
        ({"worker_dtype": "float16"}, "worker_dtype must be one of"),
        ({"exact": 1}, "exact must be a bool"),
    ],
)
def test_fit_config__raise_on_invalid_setting(settings, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(**settings)


def test_fit_config__raise_on_unknown_key():
    with pytest.raises(ValueError, match="unknown FitConfig settings: probes"):
        FitConfig.from_dict({"probes": 3})
