"""FitConfig: validation at construction and the JSON round trip."""

import json

import pytest

from dreml.reml import FitConfig


@pytest.mark.parametrize("priors", [None, (0.2, -0.1, 0.7)])
def test_fit_config__json_round_trip(priors):
    config = FitConfig(n_probes=17, seed=3, method="exact", worker_dtype="float32", loglik=False, constrain=False, priors=priors)
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_fit_config__priors_stored_as_a_tuple_of_floats():
    config = FitConfig(priors=[1, 0.5])
    assert config.priors == (1.0, 0.5) and all(type(v) is float for v in config.priors)
    hash(config)  # frozen and hashable, as with the default None


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"n_probes": 0}, "n_probes must be a positive integer"),
        ({"slq_probes": 1.5}, "slq_probes must be a positive integer"),
        ({"max_iter": True}, "max_iter must be a positive integer"),
        ({"precond_rank": -1}, "precond_rank must be a non-negative integer"),
        ({"pcg_tol": 0.0}, "pcg_tol must lie in"),
        ({"probe_tol": 1.0}, "probe_tol must lie in"),
        ({"ai_tol": -1e-3}, "ai_tol must lie in"),
        ({"tol_decrement": 0.0}, "tol_decrement must be positive"),
        ({"seed": -1}, "seed must be a non-negative integer or None"),
        ({"worker_dtype": "float16"}, "worker_dtype must be one of"),
        ({"method": "dense"}, "method must be one of"),
        ({"loglik": 1}, "loglik must be a bool"),
        ({"constrain": "no"}, "constrain must be a bool"),
        ({"priors": (0.5,)}, "priors must be at least 2 finite numbers"),
        ({"priors": "0.5 0.5"}, "priors must be at least 2 finite numbers"),
        ({"priors": (0.5, float("nan"))}, "priors must be at least 2 finite numbers"),
        ({"priors": (0.5, True)}, "priors must be at least 2 finite numbers"),
        ({"priors": (0.5, 0.0)}, r"priors: the residual variance \(last value\) must be positive"),
        ({"priors": (0.2, -0.1), "constrain": False}, r"priors: the residual variance"),
        ({"priors": (0.3, -0.1, 0.5)}, "priors: genetic variances must be non-negative unless constrain=False"),
    ],
)
def test_fit_config__raise_on_invalid_setting(settings, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(**settings)


def test_fit_config__raise_on_unknown_key():
    with pytest.raises(ValueError, match="unknown FitConfig settings: probes"):
        FitConfig.from_dict({"probes": 3})


def test_field_help__every_setting_documented_and_on_the_command_line():
    import dataclasses

    from dreml.cli import build_parser
    from dreml.reml.config import FitConfig, field_help

    helps = field_help()
    assert set(helps) == {f.name for f in dataclasses.fields(FitConfig)} and all(len(h) > 20 for h in helps.values())
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert "--n-probes" in text and "Rademacher probe vectors" in text
