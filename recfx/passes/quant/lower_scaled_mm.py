"""``fp8_lower_scaled_mm``: FP8 GEMM ops become aten quantization + ``torch._scaled_mm``, for Inductor to fuse.

``recfx::fp8_linear`` is the readable reference: an opaque op that quantizes its input inside, so nothing around it
fuses. On a GPU backend this pass spells each one out in aten ops that Inductor understands:

    x2  = x.reshape(-1, K)                                          # (M, K), the model's dtype
    s_x = amax(|x2|, -1).clamp_min(1e-12) / 448                     # (M, 1) float32, per token (dynamic mode)
    q_x = round_to_e4m3(x2 / s_x)                                   # (M, K) fp8 (recfx.ops.fp8_rows)
    y   = _scaled_mm(q_x, w_q.t(), s_x, s_w_row, bias, out_dtype)   # (M, N): scales + bias in the GEMM's epilogue
    y   = y.reshape(*x.shape[:-1], N)

Inductor then fuses the amax reduction, the scale and the cast into the kernel that produces ``x`` (RMSNorm,
SiLU(gate) * up, residual add...), so an activation is read once and written once in FP8; the GEMM is cuBLASLt's
row-wise-scaled FP8 GEMM with a bf16 output. Several GEMMs reading one tensor (q/k/v, gate/up) share one
quantization. The weight keeps its ``[N, K]`` row-major FP8 buffer from ``fp8_convert``: ``w_q.t()`` is the
column-major ``[K, N]`` operand ``_scaled_mm`` wants, a view (no per-call copy); the per-channel scales get a
``[1, N]`` buffer once, at compile time.

Numerics: the scales are bit-identical to ``quantize_fp8_per_token``'s. The values come from one float32 division
and a cast (``recfx.ops.fp8_rows.quantize_rows_float32``): where the float32 quotient lands exactly on an E4M3
midpoint they round one step away from the reference (about 1 in 1,000 values for bf16 activations).
``backend_options={"exact_quant": True}`` emits the round-to-odd recipe instead, bit-equal to the reference in
eager and Inductor-CPU code, at ~4x the ops (Inductor's compile time grows with them). ``use_fast_accum`` (the
default here, as in torchao's inference recipe) lets Hopper's FP8 tensor cores accumulate without periodic promotion
to float32; ``backend_options={"fast_accum": False}`` turns it off.

An activation read through a permute (an attention's output, ``out.transpose(1, 2).reshape(B, N, H * D)``) is the one
case where fusing its quantization into the producer goes wrong on the GPU: Inductor recomputes the attention math
inside the amax, reading rows through the head permute, and splits that reduction to fill the SMs (three kernels for
what should be one). ``backend_options={"realize_permuted": True}`` asks Inductor for the activation as contiguous
(M, K) rows before the quantization (``prims.inductor_force_stride_order``; nothing changes where it is already
stored that way, e.g. a flash-attention output). Inductor then sees a reduction over contiguous rows and makes it one
whole-row kernel; where that kernel is the rows' only reader, it computes each row in registers and writes nothing
else (the values are then not rounded to the model's dtype before the quantization, as without the option). The
same option has ``lower_tiny_attention`` compute its softmax probabilities once, so that the attention output is cheap
enough to be formed inside that kernel. ``cuda-fp8`` turns it on by default (``CudaFp8Backend.pass_defaults``,
measured in BENCHMARKS.md run 11); the pass's own default is off.

A SwiGLU product ``SiLU(gate) * up`` feeding an FP8 GEMM is the other case: Inductor fuses its quantization into
one whole-row kernel padded to a power of two, which reached about 60% of the memory bandwidth of the bf16 path's
plain product on an H100 (run 10). ``backend_options={"silu_quant_kernel": True}`` quantizes it with
``recfx::silu_mul_fp8`` (a hand-written Triton kernel on CUDA, ``recfx.kernels.fp8_silu_quant``) instead: the same
float32 recipe, rounded the same way. Only where gate and up have the product's shape and dtype and none of gate,
up, the SiLU and the product is written in place; with ``exact_quant=True`` it is an error (the op has no
round-to-odd recipe). ``cuda-fp8`` turns it on by default, as
``realize_permuted``.

Block-scaled GEMMs (``fp8_linear_blocks``, whose descriptor says ``lowering="block_mm"``) become the activation's
1 x B group quantization in the same aten ops (each group a row of ``x.reshape(-1, B)``) and
``recfx::fp8_block_mm``, the Triton GEMM that applies both scales per K block (``recfx.ops.fp8_block_mm``); a bias
is added in float32 to its float32 output, as the reference does.

Left as reference ops (and listed in the report): GEMMs whose ``Fp8Gemm`` descriptor gives a reason in
``scaled_mm``, shapes cuBLASLt cannot take (K or N not a multiple of 16), and block-scaled GEMMs whose K is not a
multiple of the block or whose block is not one the kernel takes (``BLOCK_SIZES``).
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node

from recfx.ops.fp8_block_mm import quantize_groups
from recfx.ops.fp8_linear import DEFAULT_BLOCK_SIZE
from recfx.ops.fp8_rows import quantize_per_token, quantize_rows, quantize_rows_float32
from recfx.ops.fp8_terms import BLOCK_SIZES, fp8_gemm
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.convert import fresh_buffer
from recfx.passes.quant.state import PLAN
from recfx.passes.utils import (
    fetch_attr,
    fill_meta,
    finish,
    force_strides_op,
    is_impure,
    mutated_values,
    same_shape,
    tensor_meta,
)

log = logging.getLogger(__name__)
aten = torch.ops.aten
ops = torch.ops.recfx

#: cuBLASLt FP8 GEMMs need K and N to be multiples of this.
GEMM_ALIGN = 16
#: Model dtypes whose row-wise-scaled GEMM writes the output directly (torch 2.11's CUDA row-wise scaling emits bf16).
ROWWISE_OUT_DTYPES = (torch.bfloat16,)
#: Activation dtypes whose GEMMs are lowered (float64 keeps the reference op: its quantization is float64 too).
LIFTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: ``CompileConfig.backend_options`` keys this pass reads.
OPTIONS = ("fast_accum", "exact_quant", "realize_permuted", "silu_quant_kernel")
#: Ops a ``realize_permuted`` walk looks through back from a GEMM's input (views, copies, slices: the element order
#: they read follows their input's), and the ones that make it "permuted".
_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.clone.default,
          aten.alias.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
          aten.slice.Tensor, aten.select.int, aten.expand.default, aten._to_copy.default)
_PERMUTES = (aten.permute.default, aten.transpose.int, aten.t.default)


@dataclasses.dataclass
class ScaledMmLowering:
    """What ``fp8_lower_scaled_mm`` did; ``recfx.compile``'s report shows it as section ``fp8_gemm``.

    Attributes:
        lowered: FP8 GEMMs that became ``_scaled_mm`` (row-wise scales in the epilogue, or unit scales + a fused
            float32 epilogue for non-bf16 models).
        quantizations: activation quantizations emitted (fewer than ``lowered`` when GEMMs share an input).
        kept: ``(layer, reason)`` for the GEMMs left as reference ops.
        fast_accum: whether the GEMMs use Hopper's fast FP8 accumulation.
        realized: quantized activations read through a permute that Inductor is asked for as contiguous rows
            first (``realize_permuted``).
        silu_kernels: SwiGLU products ``SiLU(gate) * up`` quantized by ``recfx::silu_mul_fp8`` instead of Inductor
            (``silu_quant_kernel``).
    """

    lowered: int = 0
    quantizations: int = 0
    kept: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    fast_accum: bool = True
    exact_quant: bool = False
    epilogue: str = ""
    realized: int = 0
    silu_kernels: int = 0

    def render(self) -> str:
        lines = [f"FP8 GEMMs lowered: {self.lowered} ({self.epilogue or 'none'}), "
                 f"{self.quantizations} activation quantizations (fused into their producers by Inductor), "
                 f"fast accumulation {'on' if self.fast_accum else 'off'}, "
                 f"{'round-to-odd (bit-equal to eager-fp8)' if self.exact_quant else 'float32'} quantization"]
        if self.realized:
            lines.append(f"activations read through a permute, taken as contiguous rows before their "
                         f"quantization: {self.realized}")
        if self.silu_kernels:
            lines.append(f"SiLU(gate) * up products quantized by recfx::silu_mul_fp8: {self.silu_kernels}")
        if self.kept:
            lines.append(f"left as reference ops (slow): {len(self.kept)}")
            lines += [f"  {name}: {why}" for name, why in self.kept]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _layer(node: Node) -> str:
    plan = node.meta.get(PLAN)
    return getattr(plan, "name", None) or node.name


def _arg(node: Node, i: int, name: str) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name)


def _block_size(node: Node) -> Any:
    """The block size B of an ``fp8_linear_blocks`` node (its default when not given)."""
    block = _arg(node, 4, "block_size")
    return DEFAULT_BLOCK_SIZE if block is None else block


def _why_not(node: Node) -> str | None:
    """Why this FP8 GEMM cannot be lowered (None when it can)."""
    gemm = fp8_gemm(node.target)
    assert gemm is not None, f"{node.name}: {node.target} is not an FP8 GEMM"
    if gemm.scaled_mm is not None:
        return gemm.scaled_mm
    x, w_q = tensor_meta(node.args[0]), tensor_meta(node.args[1])
    out = tensor_meta(node)
    if x is None or w_q is None or out is None:
        return "no shape metadata"
    k, n = x.shape[-1], w_q.shape[0]
    if not (isinstance(k, int) and isinstance(n, int)):
        return "K or N is not static"
    if gemm.lowering == "block_mm":
        block = _block_size(node)
        if block not in BLOCK_SIZES:
            return f"block size {block} (the block-scaled kernel takes {', '.join(map(str, BLOCK_SIZES))})"
        if k % block:
            return f"K={k} is not a multiple of the block size {block}"
    elif k % GEMM_ALIGN or n % GEMM_ALIGN:
        return f"K={k} or N={n} is not a multiple of {GEMM_ALIGN} (cuBLASLt FP8)"
    if x.dtype not in LIFTED_DTYPES:
        return f"activation dtype {x.dtype}: the fast path takes {', '.join(map(str, LIFTED_DTYPES))}"
    if out.dtype != x.dtype:
        return f"output dtype {out.dtype} differs from the input's {x.dtype}"
    return None


class _Emitter:
    """Emits the aten form of one graph's FP8 GEMMs; shares quantizations and weight operands between GEMMs."""

    def __init__(self, gm: GraphModule, fast_accum: bool, exact_quant: bool = False,
                 realize_permuted: bool = False, silu_quant_kernel: bool = False) -> None:
        self.gm = gm
        self.realize_permuted = realize_permuted
        self.realized = 0
        self.mutated = mutated_values(gm)  # a tensor written in place is quantized anew before each GEMM reading it
        self.silu_kernels = 0
        self.swiglu = _swiglu_products(gm, self.mutated) if silu_quant_kernel else {}
        self.exact_quant = exact_quant
        self.graph: Graph = gm.graph
        self.fast_accum = fast_accum
        self.quantized: dict[tuple[Any, ...], tuple[Node, Node]] = {}
        self.weights: dict[tuple[Node, Node], tuple[Node, Node]] = {}
        self.one: Node | None = None

    def call(self, op: Any, *args: Any, **kwargs: Any) -> Node:
        return self.graph.call_function(op, args, kwargs)

    def _float32(self, x: Node) -> Node:
        return self.call(aten._to_copy.default, x, dtype=torch.float32)

    def rows(self, x: Node, k: int) -> Node:
        """``x`` as (M, K) rows, asked for as contiguous rows where ``realize_permuted`` is on and ``x`` is read
        through a permute (see the module's docstring)."""
        x2 = self.call(aten.reshape.default, x, [-1, k])
        if not (self.realize_permuted and _through_permute(x)):
            return x2
        self.realized += 1
        return self.call(force_strides_op(), x2, [k, 1])

    def quantize(self, x: Node, k: int, x_scale: Node | None, gemm: Node) -> tuple[Node, Node]:
        """(q (M, K) fp8, s (M, 1) float32) of the rows of ``x``; one per (tensor, scale), shared by its GEMMs unless
        ``x`` is written in place somewhere (then each GEMM quantizes the values it reads, right before it)."""
        key = (x, gemm if x in self.mutated else None, x_scale)
        if key not in self.quantized:
            swiglu = self._swiglu(x) if x_scale is None else None
            if swiglu is not None:  # recfx::silu_mul_fp8 on rows of gate and up
                gate, up = (self.call(aten.reshape.default, t, [-1, k]) for t in swiglu)
                pair = self.call(ops.silu_mul_fp8.default, gate, up)
                self.quantized[key] = (self.call(operator.getitem, pair, 0), self.call(operator.getitem, pair, 1))
                self.silu_kernels += 1
                return self.quantized[key]
            x2 = self.rows(x, k)  # (M, K)
            if x_scale is None:  # dynamic per token
                q, s = quantize_per_token(self.call, x2, exact=self.exact_quant)
                self.quantized[key] = (self._row_major(q), s)
            else:  # static per tensor: the calibrated scalar, repeated for each row (the GEMM takes row scales)
                rows_of = quantize_rows if self.exact_quant else quantize_rows_float32
                q = self._row_major(rows_of(self.call, self._float32(x2), x_scale))
                rows = self.call(aten.sym_size.int, x2, 0)
                scale = self.call(aten.expand.default, self.call(aten.reshape.default, x_scale, [1, 1]), [rows, 1])
                self.quantized[key] = (q, self.call(aten.clone.default, scale, memory_format=torch.contiguous_format))
        return self.quantized[key]

    def _swiglu(self, x: Node) -> tuple[Node, Node] | None:
        """(gate, up) where ``x`` is a product :func:`_swiglu_products` found (its operands as they are now: a GEMM
        lowered before this one has replaced its node), else None."""
        if x not in self.swiglu:
            return None
        i = self.swiglu[x]  # which argument is the SiLU
        silu, up = x.args[i], x.args[1 - i]
        return silu.args[0], up  # type: ignore[union-attr, return-value]

    def groups(self, x: Node, k: int, block: int, gemm: Node) -> tuple[Node, Node]:
        """(q (M, K) fp8, s (M, K / B) float32) of ``x`` in 1 x B groups; shared like :meth:`quantize`."""
        key = (x, gemm if x in self.mutated else None, ("groups", block))
        if key not in self.quantized:
            x2 = self.rows(x, k)
            q, s = quantize_groups(self.call, x2, k, block, exact=self.exact_quant)
            self.quantized[key] = (self._row_major(q), s)
        return self.quantized[key]

    def operands(self, node: Node) -> tuple[Node, Node, Node, int, int, torch.dtype, list[Any]]:
        """(x, w_q, w_s, K, N, x's dtype, x's leading sizes, symbolic ones as ``sym_size`` nodes) of an FP8 GEMM."""
        x, w_q, w_s = node.args[0], node.args[1], node.args[2]
        assert isinstance(x, Node) and isinstance(w_q, Node) and isinstance(w_s, Node)
        x_val, w_val = tensor_meta(x), tensor_meta(w_q)
        assert x_val is not None and w_val is not None
        lead = [self.call(aten.sym_size.int, x, d) if not isinstance(s, int) else s
                for d, s in enumerate(x_val.shape[:-1])]
        return x, w_q, w_s, int(x_val.shape[-1]), int(w_val.shape[0]), x_val.dtype, lead

    def block_gemm(self, node: Node) -> Node:
        """``fp8_linear_blocks(x, w_q, w_s, bias, B)`` -> group quantization + ``recfx::fp8_block_mm``."""
        x, w_q, w_s, k, n, dtype, lead = self.operands(node)
        bias, block = _arg(node, 3, "bias"), _block_size(node)
        q, s_x = self.groups(x, k, block, node)
        out = dtype if bias is None else torch.float32  # the reference adds the bias to the float32 sum
        y = self.call(ops.fp8_block_mm.default, q, s_x, w_q, w_s, None, block, out, self.fast_accum)
        if bias is not None:
            y = self.call(aten._to_copy.default, self.call(aten.add.Tensor, y, self._float32(bias)), dtype=dtype)
        return self.call(aten.reshape.default, y, [*lead, n])

    def weight(self, w_q: Node, w_s: Node, n: int) -> tuple[Node, Node]:
        """(``w_q.t()`` (K, N) column-major view, scales (1, N) float32 buffer) of one FP8 weight."""
        key = (w_q, w_s)
        if key not in self.weights:
            scale = fetch_attr(self.gm, str(w_s.target)).reshape(-1, 1).expand(n, 1)  # [] or [N, 1] -> [N, 1]
            name = fresh_buffer(self.gm, f"{w_s.target}_row", scale.reshape(1, n).contiguous())
            s_row = self.graph.get_attr(name)
            self.weights[key] = (self.call(aten.t.default, w_q), s_row)
        return self.weights[key]

    def gemm(self, node: Node) -> Node:
        x, w_q, w_s, k, n, dtype, lead = self.operands(node)
        bias, x_scale = _arg(node, 3, "bias"), _arg(node, 4, "x_scale")
        q, s_x = self.quantize(x, k, x_scale, node)
        w_t, s_w = self.weight(w_q, w_s, n)
        if dtype in ROWWISE_OUT_DTYPES:
            fused_bias = bias if isinstance(bias, Node) and _dtype(bias) == dtype else None
            y = self.call(aten._scaled_mm.default, q, w_t, s_x, s_w, fused_bias, None, dtype, self.fast_accum)
            if bias is not None and fused_bias is None:
                y = self.call(aten._to_copy.default,
                              self.call(aten.add.Tensor, self._float32(y), self._float32(bias)), dtype=dtype)
        else:  # unit scales, float32 out; the scales (+ bias) are a pointwise epilogue Inductor fuses downstream
            one = self._one(w_q)
            acc = self.call(aten._scaled_mm.default, q, w_t, one, one, None, None, torch.float32, self.fast_accum)
            acc = self.call(aten.mul.Tensor, self.call(aten.mul.Tensor, acc, s_x), s_w)
            if bias is not None:
                acc = self.call(aten.add.Tensor, acc, self._float32(bias))
            y = self.call(aten._to_copy.default, acc, dtype=dtype)
        return self.call(aten.reshape.default, y, [*lead, n])  # (..., N)

    def _row_major(self, q: Node) -> Node:
        """cuBLASLt takes a row-major first operand (``x.reshape(-1, K)`` of a transposed view is not)."""
        return self.call(aten.clone.default, q, memory_format=torch.contiguous_format)

    def _one(self, w_q: Node) -> Node:
        if self.one is None:  # created before the first GEMM that needs it, so before every later one
            device = fetch_attr(self.gm, str(w_q.target)).device  # scales live where the GEMM runs
            name = fresh_buffer(self.gm, "unit_scale", torch.ones((), dtype=torch.float32, device=device))
            self.one = self.graph.get_attr(name)
        return self.one


def _is_silu(node: Any) -> bool:
    return (isinstance(node, Node) and node.op == "call_function" and node.target == aten.silu.default
            and isinstance(node.args[0], Node))


def _swiglu_products(gm: GraphModule, mutated: set[Node]) -> dict[Node, int]:
    """The products ``SiLU(gate) * up`` (either order) that ``recfx::silu_mul_fp8`` can quantize, each with the index
    of its SiLU argument: gate, up and the product of one shape (no broadcast) and float dtype, and none of gate, up,
    the SiLU or the product written in place (the op recomputes the product from gate and up at the GEMM, so a write
    in between would be lost). Found before any GEMM is lowered, while every node has its metadata."""
    found: dict[Node, int] = {}
    for x in gm.graph.nodes:
        if x.op != "call_function" or x.target != aten.mul.Tensor or len(x.args) != 2 or x.kwargs:
            continue
        for i in (0, 1):
            silu, up = x.args[i], x.args[1 - i]
            if not (_is_silu(silu) and isinstance(up, Node)):
                continue
            gate = silu.args[0]
            dtypes = {v.dtype if v is not None else None for v in map(tensor_meta, (gate, up, x))}
            if (len(dtypes) == 1 and dtypes <= set(LIFTED_DTYPES) and same_shape(gate, up) and same_shape(up, x)
                    and not {gate, up, silu, x} & mutated):
                found[x] = i
                break
    return found


def _through_permute(x: Node) -> bool:
    """Whether ``x`` reads a permute (of any tensor), seen through views, reshapes, slices and copies."""
    while isinstance(x, Node) and x.op == "call_function":
        if x.target in _PERMUTES:
            return True
        if x.target not in _VIEWS or not x.args:
            return False
        x = x.args[0]  # type: ignore[assignment]
    return False


def _between(first: Node, last: Node) -> list[Node]:
    """The nodes strictly between ``first`` and ``last`` in graph order."""
    nodes, node = [], first.next
    while node is not last:
        nodes.append(node)
        node = node.next
    return nodes


def _dtype(node: Node) -> torch.dtype | None:
    val = tensor_meta(node)
    return None if val is None else val.dtype


def _still_reference(gm: GraphModule) -> list[str]:
    return [f"{n.name}: {n.target} with a liftable shape is left as a reference op"
            for n in gm.graph.nodes if fp8_gemm(n.target) is not None and _why_not(n) is None]


@register_pass("fp8_lower_scaled_mm", stage="lower", postcondition=_still_reference)
class Fp8LowerScaledMm:
    """Every FP8 GEMM cuBLASLt can take is aten quantization + torch._scaled_mm (row-wise scales, fused epilogue)."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        options = ctx.backend_options
        self.fast_accum = bool(options.get("fast_accum", True))
        self.exact_quant = bool(options.get("exact_quant", False))
        for key in ("realize_permuted", "silu_quant_kernel"):
            if not isinstance(options.get(key, False), bool):
                raise ValueError(f"backend_options[{key!r}] must be True or False, got {options[key]!r}")
        self.realize_permuted = options.get("realize_permuted", False)
        self.silu_quant_kernel = options.get("silu_quant_kernel", False)
        if self.silu_quant_kernel and self.exact_quant:
            raise ValueError("backend_options: silu_quant_kernel=True quantizes with the float32 recipe and "
                             "exact_quant=True asks for the round-to-odd one; give one of them (cuda-fp8 turns "
                             "silu_quant_kernel off by itself when only exact_quant is given)")

    def __call__(self, gm: GraphModule) -> PassResult:
        emitter = _Emitter(gm, self.fast_accum, self.exact_quant, self.realize_permuted, self.silu_quant_kernel)
        summary = ScaledMmLowering(fast_accum=self.fast_accum, exact_quant=self.exact_quant)
        epilogues: set[str] = set()
        for node in list(gm.graph.nodes):
            if fp8_gemm(node.target) is None:
                continue
            why = _why_not(node)
            if why is not None:
                summary.kept.append((_layer(node), why))
                continue
            block = fp8_gemm(node.target).lowering == "block_mm"  # type: ignore[union-attr]
            anchor = node.prev
            with gm.graph.inserting_before(node):
                new = emitter.block_gemm(node) if block else emitter.gemm(node)
            # the emitted nodes get their metadata now: a GEMM reading this one's output (linear -> linear) is
            # judged and lowered by its input's shape and dtype further down this loop
            fill_meta(gm, _between(anchor, node))
            epilogues.add("block scales, recfx::fp8_block_mm" if block
                          else "row-wise scales, bf16 out" if _dtype(node.args[0]) in ROWWISE_OUT_DTYPES
                          else "unit scales, float32 epilogue")
            new.meta.update({k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta")})
            if node in emitter.mutated:  # a GEMM output written in place: its readers quantize it anew, each
                emitter.mutated.add(new)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            summary.lowered += 1
        summary.quantizations = len(emitter.quantized)
        summary.realized = emitter.realized
        summary.silu_kernels = emitter.silu_kernels
        summary.epilogue = ", ".join(sorted(epilogues))
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        fill_meta(gm)
        finish(gm)
        self.ctx.report_sections["fp8_gemm"] = summary
        log.info("fp8_lower_scaled_mm: %d GEMMs lowered, %d quantizations, %d kept", summary.lowered,
                 summary.quantizations, len(summary.kept))
        return PassResult(gm, modified=summary.lowered > 0, changed_nodes=summary.lowered,
                          detail=f"{summary.lowered} GEMMs, {summary.quantizations} quantizations")


__all__ = ["OPTIONS", "Fp8LowerScaledMm", "ScaledMmLowering"]
