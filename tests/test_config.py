import dataclasses
import json

import pytest

from recfx import CompileConfig, Placement
from recfx.models import KSA_CONFIGS, ONEREC_CONFIGS, OneRecConfig


def test_compile_config_round_trips_through_json():
    cfg = CompileConfig(dynamic_dims={"tokens": {1: "seq"}}, passes=("dce", "cse"),
                        user_passes=(Placement("dce", after="cse"),), dump_after=("all",), dump_format="svg",
                        backend_options={"mode": "default"})
    data = json.loads(json.dumps(cfg.to_dict()))
    assert CompileConfig.from_dict(data) == cfg


def test_configs_are_frozen():
    cfg = CompileConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.check_numerics = False  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, match", [
    ({"dump_format": "jpg"}, "dump_format"),
    ({"dynamic_dims": {"x": {"1": "seq"}}}, "dim index"),
    ({"passes": "dce"}, "tuple of pass names"),
    ({"user_passes": ("dce",)}, "Placement"),
])
def test_compile_config_validates(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        CompileConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown CompileConfig keys"):
        CompileConfig.from_dict({"dynamic_batch": True, "bogus": 1})


def test_placement_needs_exactly_one_anchor():
    with pytest.raises(ValueError, match="exactly one"):
        Placement("dce")
    with pytest.raises(ValueError, match="exactly one"):
        Placement("dce", after="cse", before="cse")


@pytest.mark.parametrize("cfg", [*ONEREC_CONFIGS.values(), *KSA_CONFIGS.values()], ids=lambda c: type(c).__name__)
def test_model_configs_round_trip(cfg):
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_model_config_validation():
    with pytest.raises(ValueError, match="multiple of kv_groups"):
        dataclasses.replace(ONEREC_CONFIGS["onerec-tiny"], n_heads=3)
    with pytest.raises(ValueError, match="beam"):
        OneRecConfig(d_model=8, n_heads=2, d_head=4, kv_groups=1, kv_layers=1, kv_sets=2, n_layers=1,
                     n_moe_layers=0, d_ff=8, vocab=4, beam=8)


@pytest.mark.parametrize(("cls", "data", "match"), [
    ("QuantConfig", {"block_size": True}, r"QuantConfig.block_size: expected an int, got True \(a bool\)"),
    ("QuantConfig", {"eval_batches": "4"}, r"QuantConfig.eval_batches: expected an int, got '4'"),
    ("QuantConfig", {"eval_batches": 4.5}, r"QuantConfig.eval_batches: expected an int, got 4.5"),
    ("BenchConfig", {"model": "m", "batches": [1, "8"]}, r"BenchConfig.batches: expected an int, got '8' in \[1"),
    ("BenchConfig", {"model": "m", "pipelined": "no"}, r"BenchConfig.pipelined: expected a bool, got 'no'"),
    ("BenchConfig", {"model": 3}, r"BenchConfig.model: expected a str, got 3"),
])
def test_from_dict_names_a_value_of_the_wrong_json_type(cls, data, match):
    """JSON configs: ``true`` for an int, ``"4"`` for a count are errors naming the field (not a bool taken as 1,
    nor a raw comparison error from validate)."""
    import recfx
    from recfx.bench import BenchConfig

    config_cls = {"QuantConfig": recfx.QuantConfig, "BenchConfig": BenchConfig}[cls]
    with pytest.raises(TypeError, match=match):
        config_cls.from_dict(data)


def test_from_dict_takes_an_int_for_a_float_and_none_for_an_optional():
    from recfx.bench import BenchConfig

    config = BenchConfig.from_dict({"model": "m", "time_budget": 2, "dtype": None, "seqs": [None, 64]})
    assert config.time_budget == 2 and config.seqs == (None, 64)
    assert BenchConfig.from_dict(config.to_dict()) == config
