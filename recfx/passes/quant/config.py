"""``QuantConfig`` and ``QuantRule``: what the FP8 passes quantize and how (granularities: ``recfx.ops.fp8_terms``)."""

from __future__ import annotations

import dataclasses

from recfx.config import ConfigBase
from recfx.ops.fp8_terms import ACTIVATION_MODES, WEIGHT_GRANULARITIES, activation_mode, weight_granularity
from recfx.passes.quant.calibrators import CALIBRATORS

ACTIONS = ("include", "exclude")
#: Kinds of linear layers the policy knows. The first three are kept in high precision by default.
DEFAULT_EXCLUDED_KINDS = ("router", "head", "input_projection")
KINDS = (*DEFAULT_EXCLUDED_KINDS, "attention", "ffn", "expert", "linear")


@dataclasses.dataclass(frozen=True)
class QuantRule(ConfigBase):
    """One policy rule: include or exclude the linear layers it matches. Later rules override earlier ones.

    A rule matches a linear when every matcher it sets matches (at least one must be set):

    - ``path``: an ``fnmatch`` glob over the module path or any enclosing module (``"layers.3"`` matches
      ``layers.3.ffn.w1``; ``"*.experts.*"`` every expert linear).
    - ``module_type``: the class name or qualified name of the layer or an enclosing module (``"SwiGLU"``).
    - ``op``: the aten op of the node (``"aten.linear"``); only linears with constant weights can be quantized.
    - ``kind``: ``router``, ``head``, ``input_projection`` (kept in high precision by default), ``attention``,
      ``ffn``, ``expert`` or ``linear`` (any).

    Layers of the default-excluded kinds are re-included only *explicitly*: by a rule naming their ``kind`` or by a
    ``path`` glob other than ``"*"`` (a bare ``module_type``/``op`` include does not re-include an output head).

    Include rules may override the granularity of the layers they match (``weight`` / ``activation``).

    Example:
        >>> QuantRule("exclude", path="layers.0.*").action
        'exclude'
        >>> QuantRule("include", path="*.experts.*", weight="block", activation="block").weight
        'block'
    """

    action: str
    path: str | None = None
    module_type: str | None = None
    op: str | None = None
    kind: str | None = None
    weight: str | None = None
    activation: str | None = None

    def validate(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"QuantRule action must be 'include' or 'exclude', got {self.action!r}")
        if not any((self.path, self.module_type, self.op, self.kind)):
            raise ValueError("a QuantRule needs at least one matcher: path=, module_type=, op= or kind=")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown QuantRule kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if self.action == "exclude" and (self.weight or self.activation):
            raise ValueError("weight=/activation= overrides only make sense on include rules")
        _check_choice("weight", self.weight, tuple(WEIGHT_GRANULARITIES), optional=True)  # registered ones too
        _check_choice("activation", self.activation, tuple(ACTIVATION_MODES), optional=True)

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in ("path", "module_type", "op", "kind") if getattr(self, k)]
        return f"{self.action}({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class QuantConfig(ConfigBase):
    """FP8 (E4M3) post-training quantization settings for the ``*-fp8`` backends.

    Attributes:
        weight: ``per_channel`` (default), ``per_tensor`` or ``block`` (``block_size`` x ``block_size``), or a
            granularity added with ``recfx.ops.fp8_terms.register_granularity``.
        activation: ``dynamic_per_token`` (default; needs no calibration data), ``static_per_tensor`` (scales from
            calibration) or ``block`` (dynamic 1 x ``block_size`` groups), or a registered one. The two must fold
            into the same FP8 GEMM: ``block`` weights go with ``block`` activations.
        block_size: the block / group size (128).
        calibrator: how static scales are chosen from calibration data: ``max``, ``percentile``, ``mse``
            (sweep amax in [0.25, 4] x max, minimise quantization MSE) or ``entropy`` (minimise the KL divergence
            between the activation histogram and its quantized version).
        percentile: for the percentile calibrator (99.99).
        rules: the user's policy rules, applied in order after the defaults.
        default_exclusions: keep routers/gates, output heads and input projections in high precision.
        calibration_batches: at most this many calibration batches are used (``None``: all).
        eval_batches: batches (of the calibration data, or the example inputs) used for per-layer SQNR,
            sensitivity and the model-level error in the report.
        sensitivity: rank layers by the model output error each causes alone (one forward per layer).
        auto_exclude: a target model output cosine; keep the fewest most-sensitive layers in high precision that
            reach it (implies ``sensitivity``).
        top_k: for recommenders, the report's top-k item overlap uses the first ``top_k`` beams (``None``: all).
        progress: show a progress bar during calibration.

    Example:
        >>> import recfx
        >>> cfg = recfx.QuantConfig(activation="static_per_tensor", calibrator="percentile")
        >>> recfx.QuantConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    weight: str = "per_channel"
    activation: str = "dynamic_per_token"
    block_size: int = 128
    calibrator: str = "max"
    percentile: float = 99.99
    rules: tuple[QuantRule, ...] = ()
    default_exclusions: bool = True
    calibration_batches: int | None = None
    eval_batches: int = 4
    sensitivity: bool = False
    auto_exclude: float | None = None
    top_k: int | None = None
    progress: bool = True

    def validate(self) -> None:
        _check_choice("weight", self.weight, tuple(WEIGHT_GRANULARITIES))  # registered ones too
        _check_choice("activation", self.activation, tuple(ACTIVATION_MODES))
        _check_choice("calibrator", self.calibrator, tuple(CALIBRATORS.names()))  # registered ones too
        check_pairing(self.weight, self.activation, "QuantConfig")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        if not all(isinstance(r, QuantRule) for r in self.rules):
            raise TypeError("rules must be a tuple of recfx.passes.quant.QuantRule")
        if self.calibration_batches is not None and self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1 or None, got {self.calibration_batches}")
        if self.eval_batches < 1:
            raise ValueError(f"eval_batches must be >= 1, got {self.eval_batches}")
        if self.auto_exclude is not None and not 0.0 < self.auto_exclude <= 1.0:
            raise ValueError(f"auto_exclude is a target output cosine in (0, 1], got {self.auto_exclude}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")

    @property
    def static_modes(self) -> tuple[str, ...]:
        """The activation modes of this config and its rules that need calibrated scales."""
        modes = dict.fromkeys([self.activation, *(r.activation for r in self.rules if r.activation)])
        return tuple(m for m in modes if activation_mode(m).calibrated)

    @property
    def is_static(self) -> bool:
        """Whether any layer may need calibrated activation scales."""
        return bool(self.static_modes)

    @classmethod
    def onerec_v2(cls, **changes: object) -> QuantConfig:
        """The OneRec-V2 recipe: dynamic per-token activations, per-channel weights, 128-blocks for MoE experts."""
        rules = (QuantRule("include", kind="expert", weight="block", activation="block"),)
        return cls(rules=rules, **changes)  # type: ignore[arg-type]


def quant_choices() -> dict[str, list[str]]:
    """The registered values of ``QuantConfig``'s choice fields (CLI help and messages read them here).

    Example:
        >>> quant_choices()["weight"]
        ['block', 'per_channel', 'per_tensor']
    """
    return {"weight": list(WEIGHT_GRANULARITIES), "activation": list(ACTIVATION_MODES),
            "calibrator": CALIBRATORS.names()}


def check_pairing(weight: str, activation: str, where: str) -> None:
    """The weight granularity and the activation mode must fold into one FP8 GEMM (there is none for mixed forms)."""
    w, a = weight_granularity(weight), activation_mode(activation)
    if w.gemm is not a.gemm:
        partners = [m for m in ACTIVATION_MODES if activation_mode(m).gemm is w.gemm]
        raise ValueError(f"{where}: weight={weight!r} with activation={activation!r} has no FP8 GEMM (the weight "
                         f"folds into recfx::{w.gemm.op_name}, the activation into recfx::{a.gemm.op_name}); "
                         f"weight={weight!r} goes with activation {' or '.join(map(repr, partners))}")


def _check_choice(name: str, value: str | None, choices: tuple[str, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
