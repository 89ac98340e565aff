"""A seeded random-model generator: ``generate(seed)`` writes the source of a small ``nn.Module`` and builds it.

The model is written as Python source (printed in every failure report, so a failing seed can be pasted into a
file and rerun). Its forward is a random program over a pool of values, each with a known shape:

- inputs: ``x`` (B, S, D) float and, for some seeds, ``ids`` (B, S) int64; the batch dim B is dynamic;
- layers: ``nn.Linear`` with/without bias, ``F.linear`` and ``@`` on parameters, matmul/bmm between activations,
  LayerNorm / ``nn.RMSNorm`` / hand-written RMS norm, softmax, activations, embeddings of ``ids``;
- shapes: view/reshape/transpose/permute/contiguous/flatten/unsqueeze, head split + merge, cat/split/chunk,
  slicing;
- effects: in-place writes (slice assignment, ``mul_``/``add_``/``masked_fill_``/``copy_``) on intermediates and
  on views of intermediates;
- constants: Python scalars, 0-d buffers and parameters, constant vectors, ``full_like``;
- graph shapes the passes care about: repeated subexpressions, dead values (also dead in-place writes),
  masked_fill and ``where`` (conditions from the inputs only, so that FP8 error cannot flip them), SDPA with and
  without masks, reductions, several outputs including the input itself, views of inputs, the same value twice
  and views of other outputs.

Aliasing is tracked so that the program is well defined in PyTorch: values that alias an input or a parameter are
never written in place, results of ``reshape``/``contiguous`` (which may or may not be views) are never written and
are dropped from the pool once their possible base is written.
"""

from __future__ import annotations

import dataclasses
import linecache
import random
import textwrap
from typing import Any

import torch

B = "B"  # the dynamic batch dim in a shape
DIMS = (4, 8, 16)


@dataclasses.dataclass
class Value:
    """One tensor of the generated forward: its variable name, shape (``B`` for the batch dim) and aliasing."""

    name: str
    shape: tuple[Any, ...]
    kind: str = "f"  # "f" float, "i" int64
    storage: int = -1  # storage group this value is a definite view of; -1: aliases an input or parameter
    maybe: frozenset[int] = frozenset()  # storage groups this value may or may not alias (reshape/contiguous)
    contiguous: bool = True  # known contiguous, so that ``.view`` may split its last dim

    @property
    def writable(self) -> bool:
        return self.storage >= 0 and not self.maybe and self.kind == "f"

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclasses.dataclass
class FuzzModel:
    """A generated model: the seed, its source, the built module and how to make inputs."""

    seed: int
    source: str
    module: torch.nn.Module
    seq: int
    dim: int
    vocab: int  # 0: no ``ids`` input
    ops: list[str]  # the op kinds used, for coverage counts

    def with_source(self, source: str) -> FuzzModel:
        """The same seed, shapes and weights' seed with another source (used to shrink a failing model)."""
        return dataclasses.replace(self, source=source, module=build(source, self.seed))

    def inputs(self, batch: int, seed: int, contiguous: bool = True) -> tuple[torch.Tensor, ...]:
        """Fresh inputs; ``contiguous=False``: ``x`` is a transposed view (same values, other strides)."""
        g = torch.Generator().manual_seed(seed)
        if contiguous:
            x = torch.randn(batch, self.seq, self.dim, generator=g)
        else:
            x = torch.randn(batch, self.dim, self.seq, generator=g).transpose(1, 2)
        if not self.vocab:
            return (x,)
        return x, torch.randint(0, self.vocab, (batch, self.seq), generator=g)


class _Writer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.init: list[str] = []
        self.body: list[str] = []
        self.pool: list[Value] = []
        self.count = 0
        self.storages = 0
        self.ops: list[str] = []
        r = self.rng
        self.S = r.choice((3, 4, 5))
        self.D = r.choice((8, 16))
        self.vocab = r.choice((0, 0, 11))

    # -- helpers ---------------------------------------------------------------------------------------------
    def fresh_name(self, prefix: str = "h") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def new_storage(self) -> int:
        self.storages += 1
        return self.storages

    def emit(self, line: str) -> None:
        self.body.append(line)

    def add(self, expr: str, shape: tuple[Any, ...], *, kind: str = "f", view_of: Value | None = None,
            maybe_of: Value | None = None, prefix: str = "h", keep: bool = True) -> Value:
        """Emit ``name = expr`` and add the value to the pool (``view_of``: a definite view; ``maybe_of``: reshape)."""
        name = self.fresh_name(prefix)
        self.emit(f"{name} = {expr}  # {shape_str(shape)}")
        if view_of is not None:
            v = Value(name, shape, kind, view_of.storage, view_of.maybe, contiguous=False)
        elif maybe_of is not None:
            v = Value(name, shape, kind, -1 if maybe_of.storage < 0 else self.new_storage(),
                      maybe_of.maybe | ({maybe_of.storage} if maybe_of.storage >= 0 else frozenset()), False)
        else:
            v = Value(name, shape, kind, self.new_storage())
        if keep:
            self.pool.append(v)
        return v

    def pick(self, pred: Any = lambda v: True, recent: bool = True) -> Value | None:
        cands = [v for v in self.pool if v.kind == "f" and pred(v)]
        if not cands:
            return None
        if recent and self.rng.random() < 0.6:
            cands = cands[-3:]
        return self.rng.choice(cands)

    def split_heads(self, v: Value) -> str:
        """``v`` (B, S, d) as (B, 2, S, d/2): ``.view`` where v is known contiguous, else ``.reshape``."""
        view = "view" if v.contiguous else "reshape"
        return f"{v.name}.{view}({self.batch(v)}, {v.shape[1]}, 2, {v.shape[2] // 2}).transpose(1, 2)"

    def batch(self, v: Value, infer: bool = True) -> str:
        """The batch size in a view/reshape: from the shape, or ``-1`` (``infer``: no other dim is -1)."""
        return self.rng.choice((f"{v.name}.shape[0]", f"{v.name}.size(0)") + (("-1",) if infer else ()))

    def param_name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def written(self, v: Value) -> None:
        """v's storage was written: values that may or may not alias it are no longer well defined."""
        self.pool = [p for p in self.pool if v.storage not in p.maybe]

    def mask_for(self, v: Value, causal: bool = True) -> str | None:
        """A bool mask broadcastable to v, computed from the inputs only (so that no numeric error can flip it),
        or the causal buffer for (..., S, S) values (``causal``)."""
        choices = []
        if v.shape[:2] == (B, self.S) and v.ndim >= 2:
            choices.append(f"(x[..., :1] > 0){'[..., None]' * (v.ndim - 3)}" if v.ndim >= 3 else "(x[..., 0] > 0)")
            if self.vocab:
                choices.append(f"(ids < {self.vocab // 3})" + "[..., None]" * (v.ndim - 2))
        if causal and v.ndim >= 2 and v.shape[-2:] == (self.S, self.S):
            choices.append("self.causal")
        return self.rng.choice(choices) if choices else None

    # -- ops: each returns False if it does not apply to the current pool -----------------------------------
    def op_linear(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2)
        if v is None:
            return False
        d, n, bias = v.shape[-1], self.rng.choice(DIMS), self.rng.random() < 0.6
        style = self.rng.choice(("module", "module", "functional", "matmul"))
        if style == "module":
            name = self.param_name(self.rng.choice(("ffn", "mlp", "proj", "attn_o", "layer", "head")))
            self.init.append(f"self.{name} = nn.Linear({d}, {n}, bias={bias})")
            self.add(f"self.{name}({v.name})", (*v.shape[:-1], n))
        elif style == "functional":
            w = self.param_name("w")
            self.init.append(f"self.{w} = nn.Parameter(torch.randn({n}, {d}) / {d ** 0.5:.3f})")
            b = ""
            if bias:
                b = self.param_name("b")
                self.init.append(f"self.{b} = nn.Parameter(torch.randn({n}) * 0.1)")
                b = f", self.{b}"
            self.add(f"F.linear({v.name}, self.{w}{b})", (*v.shape[:-1], n))
        else:
            w = self.param_name("w")
            self.init.append(f"self.{w} = nn.Parameter(torch.randn({d}, {n}) / {d ** 0.5:.3f})")
            self.add(f"{v.name} @ self.{w}", (*v.shape[:-1], n))
        self.ops.append(f"linear.{style}" + (".bias" if bias and style != "matmul" else ""))
        return True

    def op_matmul(self) -> bool:
        a = self.pick(lambda v: v.ndim == 3)
        if a is None:
            return False
        b = self.pick(lambda v: v.shape == a.shape) or a
        fn = self.rng.choice(("torch.matmul", "torch.bmm"))
        scores = self.add(f"{fn}({a.name}, {b.name}.transpose(1, 2)) * {a.shape[-1] ** -0.5:.4f}",
                          (B, a.shape[1], b.shape[1]))
        self.ops.append(fn.split(".")[1])
        if self.rng.random() < 0.5:
            c = self.pick(lambda v: v.ndim == 3 and v.shape[1] == b.shape[1]) or b
            self.add(f"{fn}({scores.name}.softmax(-1), {c.name})", (B, a.shape[1], c.shape[2]))
        return True

    def op_residual(self) -> bool:
        a = self.pick()
        if a is None:
            return False
        b = self.pick(lambda v: v.shape == a.shape and v is not a)
        if b is None:
            return False
        op = self.rng.choice(("+", "+", "-", "*"))
        self.add(f"{a.name} {op} {b.name}", a.shape)
        self.ops.append("residual")
        return True

    def op_norm(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2 and v.shape[-1] >= 4)
        if v is None:
            return False
        d = v.shape[-1]
        kind = self.rng.choice(("ln", "ln_noaffine", "ln_f", "rms", "rms_hand"))
        if kind in ("ln", "ln_noaffine", "rms"):
            name = self.param_name("norm")
            ctor = "nn.RMSNorm" if kind == "rms" else "nn.LayerNorm"
            affine = "" if kind != "ln_noaffine" else ", elementwise_affine=False"
            self.init.append(f"self.{name} = {ctor}({d}{affine})")
            if kind != "ln_noaffine":
                self.init.append(f"nn.init.normal_(self.{name}.weight, 1.0, 0.2)")
            self.add(f"self.{name}({v.name})", v.shape)
        elif kind == "ln_f":
            self.add(f"F.layer_norm({v.name}, ({v.name}.shape[-1],), eps=1e-5)", v.shape)
        else:
            w = self.param_name("g")
            self.init.append(f"self.{w} = nn.Parameter(1.0 + 0.2 * torch.randn({d}))")
            self.add(f"{v.name} * torch.rsqrt({v.name}.pow(2).mean(-1, keepdim=True) + 1e-6) * self.{w}", v.shape)
        self.ops.append(f"norm.{kind}")
        return True

    def op_softmax(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2)
        if v is None:
            return False
        form = self.rng.choice(("torch.softmax({}, dim=-1)", "F.softmax({}, dim=-1)", "{}.softmax(-1)",
                                "{}.softmax(dim=1)", "F.log_softmax({}, dim=-1)"))
        self.add(form.format(v.name), v.shape)
        self.ops.append("softmax")
        return True

    def op_activation(self) -> bool:
        v = self.pick()
        if v is None:
            return False
        form = self.rng.choice(("F.relu({})", "F.gelu({})", "F.gelu({}, approximate='tanh')", "F.silu({})",
                                "torch.tanh({})", "torch.sigmoid({})", "{}.relu()", "F.leaky_relu({}, 0.1)"))
        self.add(form.format(v.name), v.shape)
        self.ops.append("activation")
        return True

    def op_heads(self) -> bool:
        """Split the last dim into 2 heads (B, 2, S, d/2), maybe work per head, merge back."""
        v = self.pick(lambda v: v.ndim == 3 and v.shape[-1] % 2 == 0)
        if v is None:
            return False
        _, s, d = v.shape
        h = self.add(self.split_heads(v), (B, 2, s, d // 2), view_of=v if v.contiguous else None, maybe_of=v)
        r = self.rng.random()
        if r < 0.3:
            h = self.add(f"F.gelu({h.name}) * 2.0", h.shape)
        elif r < 0.6:  # a copy in (B, 2, S, d/2) layout: merging the heads back needs a real copy
            h = self.add(f"{h.name}.contiguous()", h.shape, maybe_of=h)
        merge = self.rng.choice(("{}.transpose(1, 2).contiguous().view({}, {}, {})",
                                 "{}.transpose(1, 2).reshape({}, {}, {})", "{}.permute(0, 2, 1, 3).flatten(2)",
                                 "{}.transpose(1, 2).contiguous().view({}, {}, -1)"))
        if "{}, {}" in merge:
            expr = merge.format(h.name, self.batch(h, infer="-1" not in merge), s, d)
        else:
            expr = merge.format(h.name)
        self.add(expr, (B, s, d), maybe_of=h)
        self.ops.append("heads")
        return True

    def op_reshape(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2)
        if v is None:
            return False
        r = self.rng.random()
        if v.ndim == 3 and r < 0.25:
            self.add(f"{v.name}.permute(0, 2, 1)", (B, v.shape[2], v.shape[1]), view_of=v)
            self.ops.append("permute")
        elif v.ndim == 3 and r < 0.5:
            self.add(f"{v.name}.reshape({self.batch(v, infer=False)}, -1)", (B, v.shape[1] * v.shape[2]), maybe_of=v)
            self.ops.append("reshape")
        elif r < 0.65:
            self.add(f"{v.name}.unsqueeze(1)", (B, 1, *v.shape[1:]), view_of=v)
            self.ops.append("unsqueeze")
        elif v.ndim == 3 and r < 0.8:
            t = self.add(f"{v.name}.transpose(1, 2)", (B, v.shape[2], v.shape[1]), view_of=v)
            if self.rng.random() < 0.5:
                self.add(f"{t.name}.contiguous()", t.shape, maybe_of=t)
                self.ops.append("transpose.contiguous")
            else:
                self.add(f"{t.name}.contiguous().view({self.batch(t, infer=False)}, -1)", (B, v.shape[1] * v.shape[2]),
                         maybe_of=t)
                self.ops.append("transpose.contiguous.view")
        elif r < 0.9 and v.ndim == 3 and not v.contiguous:
            self.add(f"{v.name}.contiguous().view({self.batch(v, infer=False)}, -1)", (B, v.shape[1] * v.shape[2]),
                     maybe_of=v)
            self.ops.append("contiguous.view")
        elif r < 0.9:
            self.add(f"{v.name}.contiguous()", v.shape, maybe_of=v)
            self.ops.append("contiguous")
        else:
            self.add(f"{v.name}.clone()", v.shape)
            self.ops.append("clone")
        return True

    def op_cat_split(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2 and v.shape[-1] >= 4)
        if v is None:
            return False
        r = self.rng.random()
        d = v.shape[-1]
        if r < 0.4:
            other = self.pick(lambda u: u.shape[:-1] == v.shape[:-1]) or v
            self.add(f"torch.cat([{v.name}, {other.name}], dim=-1)", (*v.shape[:-1], d + other.shape[-1]))
            self.ops.append("cat")
        elif r < 0.7:
            k = self.rng.randrange(1, d)
            a, b = self.fresh_name(), self.fresh_name()
            self.emit(f"{a}, {b} = torch.split({v.name}, [{k}, {d - k}], dim=-1)")
            self.pool += [Value(a, (*v.shape[:-1], k), "f", v.storage, v.maybe, False),
                          Value(b, (*v.shape[:-1], d - k), "f", v.storage, v.maybe, False)]
            self.ops.append("split")
        else:
            a, b = self.fresh_name(), self.fresh_name()
            self.emit(f"{a}, {b} = {v.name}.chunk(2, dim=-1)")
            self.pool += [Value(a, (*v.shape[:-1], (d + 1) // 2), "f", v.storage, v.maybe, False),
                          Value(b, (*v.shape[:-1], d // 2), "f", v.storage, v.maybe, False)]
            self.ops.append("chunk")
        return True

    def op_embedding(self) -> bool:
        if not self.vocab:
            return False
        n = self.rng.choice(DIMS)
        if self.rng.random() < 0.7:
            name = self.param_name("emb")
            self.init.append(f"self.{name} = nn.Embedding({self.vocab}, {n})")
            self.add(f"self.{name}(ids)", (B, self.S, n))
        else:
            name = self.param_name("table")
            self.init.append(f"self.{name} = nn.Parameter(torch.randn({self.vocab}, {n}))")
            self.add(f"F.embedding(ids, self.{name})", (B, self.S, n))
        self.ops.append("embedding")
        return True

    def op_slice(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2 and v.shape[-1] >= 2)
        if v is None:
            return False
        r = self.rng.random()
        d = v.shape[-1]
        if r < 0.4:
            k = self.rng.randrange(1, d)
            self.add(f"{v.name}[..., :{k}]", (*v.shape[:-1], k), view_of=v)
        elif r < 0.6 and v.ndim >= 3:
            self.add(f"{v.name}[:, 0]", (B, *v.shape[2:]), view_of=v)
        elif r < 0.8 and v.ndim >= 3 and v.shape[1] >= 2:
            self.add(f"{v.name}[:, 1:]", (B, v.shape[1] - 1, *v.shape[2:]), view_of=v)
        else:
            self.add(f"{v.name}[..., ::2]", (*v.shape[:-1], (d + 1) // 2), view_of=v)
        self.ops.append("slice")
        return True

    def op_inplace(self) -> bool:
        v = self.pick(lambda v: v.writable)
        if v is None:
            return False
        r = self.rng.random()
        if r < 0.2 and v.ndim >= 2:
            self.emit(f"{v.name}[:, 0] = {self.rng.choice(('0.0', '1.5', '-2.0'))}")
        elif r < 0.35:
            k = max(1, v.shape[-1] // 2)
            self.emit(f"{v.name}[..., :{k}] *= {self.rng.choice(('0.5', '2.0'))}")
        elif r < 0.5:
            self.emit(f"{v.name}.mul_({self.scalar()})")
        elif r < 0.6:
            self.emit(f"{v.name}.add_(1.0)")
        elif r < 0.7:
            self.emit(f"{v.name}.relu_()")
        elif r < 0.85 and (mask := self.mask_for(v, causal=False)) is not None:
            self.emit(f"{v.name}.masked_fill_({mask}, 0.0)")
        else:
            src = self.pick(lambda u: u.shape == v.shape and u.storage != v.storage and v.storage not in u.maybe)
            if src is None:
                return False
            self.emit(f"{v.name}.copy_({src.name})")
        self.written(v)
        self.ops.append("inplace")
        return True

    def scalar(self) -> str:
        """A constant: a Python float, a 0-d buffer or a 0-d parameter."""
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(("0.5", "2.0", "-1.25", "3.0"))
        name = self.param_name("s")
        value = self.rng.choice((0.5, 1.5, 2.0, -0.75))
        if r < 0.75:
            self.init.append(f"self.register_buffer('{name}', torch.tensor({value}))")
        else:
            self.init.append(f"self.{name} = nn.Parameter(torch.tensor({value}))")
        return f"self.{name}"

    def op_constant(self) -> bool:
        v = self.pick()
        if v is None:
            return False
        r = self.rng.random()
        if r < 0.5:
            op = self.rng.choice(("*", "/", "+"))
            self.add(f"{v.name} {op} {self.scalar()}", v.shape)
        elif r < 0.7:
            name = self.param_name("c")
            self.init.append(f"self.register_buffer('{name}', torch.linspace(-1.0, 1.0, {v.shape[-1]}))")
            self.add(f"{v.name} + self.{name}", v.shape)
        elif r < 0.85:
            self.add(f"{v.name} + torch.full_like({v.name}, 0.25)", v.shape)
        else:
            self.add(f"{v.name} * torch.ones({v.shape[-1]}, dtype={v.name}.dtype) * 0.5", v.shape)
        self.ops.append("constant")
        return True

    def op_repeat(self) -> bool:
        """The same subexpression twice (CSE food), combined."""
        v = self.pick()
        if v is None:
            return False
        form = self.rng.choice(("F.gelu({})", "torch.sigmoid({}) * 2.0", "{}.softmax(-1)", "({} + 1.0).relu()"))
        a = self.add(form.format(v.name), v.shape, keep=False)
        b = self.add(form.format(v.name), v.shape, keep=False)
        self.add(f"{a.name} * {b.name}" if self.rng.random() < 0.5 else f"{a.name} + {b.name}", v.shape)
        self.ops.append("repeat")
        return True

    def op_dead(self) -> bool:
        v = self.pick()
        if v is None:
            return False
        d = self.add(f"torch.tanh({v.name}) * 3.0", v.shape, keep=False)
        if self.rng.random() < 0.5:
            self.emit(f"{d.name}.mul_(2.0)")  # a write to a dead value
        if self.rng.random() < 0.3:
            self.emit(f"if {v.name}.shape[-1] == 999:")
            self.emit(f"    {v.name} = {v.name} * 0.0")
        self.ops.append("dead")
        return True

    def op_masked_fill(self) -> bool:
        v = self.pick(lambda v: self.mask_for(v) is not None)
        if v is None:
            return False
        mask = self.mask_for(v)
        if mask == "self.causal" and self.rng.random() < 0.6:
            self.add(f"{v.name}.masked_fill(self.causal, float('-inf')).softmax(-1)", v.shape)
            self.ops.append("masked_fill.softmax")
        else:
            self.add(f"{v.name}.masked_fill({mask}, {self.rng.choice(('0.0', '-1.0', '1e4'))})", v.shape)
            self.ops.append("masked_fill")
        return True

    def op_where(self) -> bool:
        v = self.pick(lambda v: self.mask_for(v, causal=False) is not None)
        if v is None:
            return False
        other = self.pick(lambda u: u.shape == v.shape)
        mask = self.mask_for(v, causal=False)
        if other is None or self.rng.random() < 0.4:
            self.add(f"torch.where({mask}, {v.name}, torch.zeros_like({v.name}))", v.shape)
        else:
            self.add(f"torch.where({mask}, {v.name}, {other.name})", v.shape)
        self.ops.append("where")
        return True

    def op_sdpa(self) -> bool:
        v = self.pick(lambda v: v.ndim == 3 and v.shape[1] == self.S and v.shape[-1] % 2 == 0)
        if v is None:
            return False
        d = v.shape[-1]
        qkv = []
        for _ in range(3):
            u = self.pick(lambda u: u.shape == v.shape) or v
            if self.rng.random() < 0.5:
                name = self.param_name("attn_qkv")
                self.init.append(f"self.{name} = nn.Linear({d}, {d}, bias={self.rng.random() < 0.5})")
                u = self.add(f"self.{name}({u.name})", u.shape)
            qkv.append(self.add(self.split_heads(u), (B, 2, self.S, d // 2), view_of=u if u.contiguous else None,
                                maybe_of=u, keep=False))
        mask = self.rng.choice(("", ", is_causal=True", ", attn_mask=self.causal.logical_not()",
                                ", attn_mask=self.bias_mask"))
        if "bias_mask" in mask and "self.bias_mask" not in " ".join(self.init):
            self.init.append(f"self.register_buffer('bias_mask', torch.randn({self.S}, {self.S}) * 0.5)")
        q, k, vv = qkv
        o = self.add(f"F.scaled_dot_product_attention({q.name}, {k.name}, {vv.name}{mask})", (B, 2, self.S, d // 2),
                     keep=False)
        merge = self.rng.choice(("{}.transpose(1, 2).contiguous().view({}, {}, {})",
                                 "{}.transpose(1, 2).reshape({}, {}, {})"))
        self.add(merge.format(o.name, self.batch(o), self.S, d), (B, self.S, d), maybe_of=o)
        self.ops.append("sdpa" + (mask.split("=")[0].strip(", ") and "." + mask.split("=")[0].strip(", ")))
        return True

    def op_reduce(self) -> bool:
        v = self.pick(lambda v: v.ndim >= 2)
        if v is None:
            return False
        form = self.rng.choice(("{}.mean(-1, keepdim=True)", "{}.sum(dim=1)", "{}.amax(-1)", "{}.mean(dim=(1,))"))
        if form == "{}.mean(-1, keepdim=True)":
            shape = (*v.shape[:-1], 1)
        elif form == "{}.amax(-1)":
            shape = v.shape[:-1]
        else:
            shape = (v.shape[0], *v.shape[2:])
        if len(shape) < 2:
            return False
        self.add(form.format(v.name), shape)
        self.ops.append("reduce")
        return True

    def op_gated(self) -> bool:
        """A gated MLP as LLaMA-style models write it: SiLU(gate) * up in either order (or SiLU(gate) * gate, up
        then unused), mostly with a down projection: the product is what cuda-fp8's ``silu_quant_kernel`` quantizes
        in one op (gate and up of one shape)."""
        # the block's width d = 16 and mostly n = 16 or 32: multiples of 16, as cuBLASLt's FP8 GEMMs need, so that
        # cuda-fp8 lowers the down projection and quantizes its input with the op; n = 8 leaves the product to aten
        v = self.pick(lambda v: v.ndim >= 2 and v.shape[-1] == 16) or self.pick(lambda v: v.ndim >= 2)
        if v is None:
            return False
        if v.shape[-1] != 16:
            proj = self.param_name("ffn_in")
            self.init.append(f"self.{proj} = nn.Linear({v.shape[-1]}, 16)")
            v = self.add(f"self.{proj}({v.name})", (*v.shape[:-1], 16))
        d, n = 16, self.rng.choice((16, 32, 16, 8))
        gate, up = self.param_name("gate_proj"), self.param_name("up_proj")
        self.init.append(f"self.{gate} = nn.Linear({d}, {n}, bias=False)")
        self.init.append(f"self.{up} = nn.Linear({d}, {n}, bias={self.rng.random() < 0.3})")
        g = self.add(f"self.{gate}({v.name})", (*v.shape[:-1], n))
        u = self.add(f"self.{up}({v.name})", (*v.shape[:-1], n))
        form = self.rng.choice(("F.silu({g}) * {u}", "{u} * F.silu({g})", "F.silu({g}) * {u}",
                                "torch.nn.functional.silu({g}) * {g}"))
        h = self.add(form.format(g=g.name, u=u.name), g.shape)
        r = self.rng.random()
        if r < 0.8:  # a down projection, mostly added to the block's input as in a transformer
            down = self.param_name("down_proj")
            self.init.append(f"self.{down} = nn.Linear({n}, {d}, bias={self.rng.random() < 0.3})")
            self.add(f"{v.name} + self.{down}({h.name})" if r < 0.6 else f"self.{down}({h.name})", v.shape)
        self.ops.append("gated")
        return True

    OPS = ("linear", "linear", "linear", "matmul", "residual", "norm", "softmax", "activation", "heads", "reshape",
           "cat_split", "embedding", "slice", "inplace", "inplace", "constant", "repeat", "dead", "masked_fill",
           "where", "sdpa", "reduce", "gated")

    # -- the model ---------------------------------------------------------------------------------------------
    def outputs(self) -> list[str]:
        cands = [v for v in self.pool if v.name not in ("x", "ids")]
        r = self.rng
        outs = [v.name for v in r.sample(cands[-6:], k=min(len(cands[-6:]), r.randint(1, 3)))]
        if r.random() < 0.2:
            outs.append("x")
            self.ops.append("out.input")
        if r.random() < 0.15:
            outs.append(r.choice(("x[:, 0]", "x.transpose(1, 2)", "x[..., :2]")))
            self.ops.append("out.input_view")
        if r.random() < 0.2:
            outs.append(outs[0])
            self.ops.append("out.twice")
        if r.random() < 0.2:
            outs.append(f"{outs[0]}[..., :1]")
            self.ops.append("out.view_of_output")
        if self.vocab and r.random() < 0.1:
            outs.append("ids")
            self.ops.append("out.int_input")
        r.shuffle(outs)
        return outs

    def write(self, n_ops: int) -> str:
        self.pool.append(Value("x", (B, self.S, self.D), "f", -1))
        self.init.append(f"self.register_buffer('causal', torch.ones({self.S}, {self.S}, dtype=torch.bool).triu(1))")
        if self.vocab and self.rng.random() < 0.5:
            self.op_embedding()
        done = 0
        while done < n_ops:
            if getattr(self, "op_" + self.rng.choice(self.OPS))():
                done += 1
        outs = self.outputs()
        args = "x, ids" if self.vocab else "x"
        init = textwrap.indent("\n".join(self.init), " " * 8)
        body = textwrap.indent("\n".join(self.body), " " * 8)
        ret = outs[0] if len(outs) == 1 else ", ".join(outs)
        return (f"class Model(nn.Module):  # fuzz seed {self.seed}\n"
                f"    def __init__(self):\n        super().__init__()\n{init}\n\n"
                f"    def forward(self, {args}):\n{body}\n        return {ret}\n")


def shape_str(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def generate(seed: int, n_ops: int | None = None) -> FuzzModel:
    """The model of ``seed``: its source (deterministic in ``seed``) and an eval-mode instance built from it."""
    w = _Writer(seed)
    source = w.write(n_ops if n_ops is not None else w.rng.randint(3, 10))
    module = build(source, seed)
    return FuzzModel(seed, source, module, w.S, w.D, w.vocab, w.ops)


def build(source: str, seed: int) -> torch.nn.Module:
    """Execute the generated class source and instantiate it with weights from ``seed``."""
    filename = f"<recfx-fuzz-{seed}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show the line
    namespace: dict[str, Any] = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional}
    exec(compile(source, filename, "exec"), namespace)  # our own generated source
    torch.manual_seed(seed)
    return namespace["Model"]().eval()
