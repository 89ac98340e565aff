"""QuantConfig / QuantRule: validation with clear messages, dict round trip, the OneRec-V2 preset."""

from __future__ import annotations

import pytest

from recfx import QuantConfig, QuantRule
from recfx.passes import PassContext
from recfx.passes.quant import fp8_pipeline


def test_defaults_follow_the_spec() -> None:
    cfg = QuantConfig()
    assert (cfg.weight, cfg.activation, cfg.block_size, cfg.calibrator) == (
        "per_channel", "dynamic_per_token", 128, "max")
    assert not cfg.is_static and cfg.default_exclusions


def test_round_trip_with_rules() -> None:
    cfg = QuantConfig(activation="static_per_tensor", calibrator="mse",
                      rules=(QuantRule("exclude", path="layers.0"), QuantRule("include", kind="head")))
    again = QuantConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.rules[0], QuantRule)
    assert QuantConfig.onerec_v2().rules[0].weight == "block"


@pytest.mark.parametrize("kwargs,match", [
    ({"weight": "per_row"}, "unknown weight 'per_row'"),
    ({"activation": "dynamic"}, "unknown activation"),
    ({"calibrator": "minmax"}, "unknown calibrator"),
    ({"weight": "block"}, "weight='block' goes with activation 'block'"),
    ({"block_size": 0}, "block_size"),
    ({"percentile": 20.0}, "percentile"),
    ({"auto_exclude": 1.5}, "auto_exclude"),
    ({"eval_batches": 0}, "eval_batches"),
])
def test_bad_config_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kwargs)


def test_bad_rules() -> None:
    with pytest.raises(ValueError, match="at least one matcher"):
        QuantRule("include")
    with pytest.raises(ValueError, match="'include' or 'exclude'"):
        QuantRule("keep", path="x")
    with pytest.raises(ValueError, match="unknown QuantRule kind"):
        QuantRule("exclude", kind="embedding_bag")
    with pytest.raises(ValueError, match="only make sense on include"):
        QuantRule("exclude", path="x", weight="block")
    with pytest.raises(TypeError, match="rules must be"):
        QuantConfig(rules=({"action": "exclude"},))  # type: ignore[arg-type]


def test_pipeline_checks_options_before_running() -> None:
    names = fp8_pipeline(PassContext())
    assert names[0] == "fp8_annotate" and names[-2:] == ["fp8_lower", "fp8_report"]
    with pytest.raises(ValueError, match="needs calibration data"):
        fp8_pipeline(PassContext(quant=QuantConfig(activation="static_per_tensor")))
    with pytest.raises(ValueError, match="calibration data is empty"):
        fp8_pipeline(PassContext(calibration=[]))
    with pytest.raises(TypeError, match="must be a recfx.QuantConfig"):
        fp8_pipeline(PassContext(quant={"weight": "per_tensor"}))  # type: ignore[arg-type]


def test_docstring_examples_run() -> None:
    import recfx.analysis.stats
    import recfx.passes.quant
    import recfx.passes.quant.config
    import recfx.passes.quant.report
    from recfx.ops.fp8_testing import run_examples

    for module in (recfx.passes.quant.config, recfx.passes.quant.report, recfx.passes.quant, recfx.analysis.stats):
        run_examples([], module)
