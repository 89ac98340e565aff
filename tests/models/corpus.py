"""A corpus of public architectures recfx did not write, with random weights and tiny configs (nothing downloaded).

Each entry builds a model written the way its community writes it, its example inputs, a second batch of another
size, and the golden counts the compiler must reach on it: KSA layers fused and weight GEMMs quantized (of those
found). transformers' Llama, Qwen2 and GPT-2 (both attention implementations) need ``transformers``; the others
are written here: a KSA transformer in the official code's and transformers' style (SDPA with a bool mask), a
jagged-input recommender (``addmm`` layers, ``searchsorted``, ``index_add``) and a DLRM with ``nn.EmbeddingBag``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tests.cuda_fp8_cpu import NAME as CUDA_FP8_PASSES

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One corpus model: a builder, inputs at a batch size, and its golden counts."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int], tuple[torch.Tensor, ...]]  # (batch, seed) -> inputs
    ksa_fused: int  # recfx::ksa_attention nodes after compile
    gemms: tuple[int, int]  # (weight GEMMs found, quantized) by the default FP8 policy
    needs: str = ""  # a package the entry needs
    dynamic_dims: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)  # beyond the batch


# ------------------------------------------------------------------------------------------------ transformers
class LogitsOnly(nn.Module):
    """A causal LM called as ``model(input_ids).logits``, without a KV cache."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


VOCAB = 128


def _hf(family: str, attn: str) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        lm = transformers.GPT2LMHeadModel(cfg)
    else:
        config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[family]
        cfg = config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        lm = model_cls(cfg)
    lm.set_attn_implementation(attn)
    return LogitsOnly(lm).eval()


def _tokens(batch: int, seed: int, length: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, VOCAB, (batch, length), generator=g),)


# ---------------------------------------------------------------------------- KSA transformer written with SDPA
CHUNK, SUMMARIES, WINDOW = 4, 1, 2


def ksa_allowed(n: int, chunk: int, summaries: int, window: int, device: torch.device) -> torch.Tensor:
    """KSA's visibility as a bool (n, n) mask, True = may attend, written from the rule (not recfx's helper).

    Text query: its own chunk's text causally, the text of the ``window`` previous chunks, the summaries of chunks
    older than that. Summary query: its own chunk (text, and its summaries causally).
    """
    pos = torch.arange(n, device=device)
    block = pos // (chunk + summaries)
    summary = pos % (chunk + summaries) >= chunk
    gap = block[:, None] - block[None, :]  # chunks back from the query to the key
    causal = pos[None, :] <= pos[:, None]
    text_query = torch.where(summary[None, :], gap > window, gap <= window)
    summary_query = gap == 0
    return torch.where(summary[:, None], summary_query, text_query) & causal


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class SdpaKSAAttention(nn.Module):
    """Attention as transformers' ``sdpa`` implementation writes it: (B, H, L, D) after a transpose, RoPE, GQA by
    ``repeat_kv`` or SDPA's ``enable_gqa``, ``F.scaled_dot_product_attention`` with the layer's bool mask."""

    def __init__(self, dim: int, heads: int, kv_heads: int, gqa: str) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.gqa = heads, kv_heads, dim // heads, gqa
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        q = self.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        k = self.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, D)
        v = self.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        if self.gqa == "repeat":  # transformers' repeat_kv
            k = k[:, :, None].expand(b, self.kv_heads, groups, n, self.head_dim).reshape(b, self.heads, n, -1)
            v = v[:, :, None].expand(b, self.kv_heads, groups, n, self.head_dim).reshape(b, self.heads, n, -1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))  # (B, L, dim)


class SdpaKSABlock(nn.Module):
    def __init__(self, dim: int, gqa: str, full: bool) -> None:
        super().__init__()
        self.full = full  # a full (text-causal) layer of the hybrid stack: not KSA
        self.attn_norm, self.mlp_norm = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = SdpaKSAAttention(dim, heads=4, kv_heads=2, gqa=gqa)
        self.up_proj, self.gate_proj = nn.Linear(dim, 2 * dim), nn.Linear(dim, 2 * dim)
        self.down_proj = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, ksa: torch.Tensor, full: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.attn_norm(h), full if self.full else ksa, cos, sin)
        x = self.mlp_norm(h)
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SdpaKSAModel(nn.Module):
    """Four layers (three KSA, the last a full text-causal layer), the masks built once from the length."""

    def __init__(self, dim: int = 64, vocab: int = VOCAB) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(SdpaKSABlock(dim, gqa, i == 3) for i, gqa in enumerate(
            ("repeat", "enable_gqa", "repeat", "enable_gqa")))
        self.norm = nn.RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.head_dim = dim // 4

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        ksa = ksa_allowed(n, CHUNK, SUMMARIES, WINDOW, tokens.device)
        full = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()  # a full causal layer
        inv_freq = 1.0 / 10000 ** (torch.arange(0, self.head_dim, 2, device=tokens.device) / self.head_dim)
        angles = torch.arange(n, device=tokens.device)[:, None] * inv_freq  # (L, D/2)
        cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # (L, D)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, ksa, full, cos, sin)
        return self.lm_head(self.norm(h))


def _ksa_tokens(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    return _tokens(batch, seed, length=5 * (CHUNK + SUMMARIES))


# ------------------------------------------------------------------------------------ jagged-input recommender
class JaggedRecommender(nn.Module):
    """A ranking model over jagged id lists, written as recommender code writes it.

    ``values`` (nnz,) item ids of every request back to back, ``offsets`` (B + 1,) where each request's ids start;
    the row of each id by ``searchsorted``, a mean-pooled embedding by ``index_add``, a bucketised dense feature,
    then an MLP of ``addmm`` layers with [K, N] weights.
    """

    def __init__(self, items: int = 500, dim: int = 16, dense: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(items, dim, generator=g) * 0.1)
        self.bucket_table = nn.Parameter(torch.randn(9, dim, generator=g) * 0.1)
        self.register_buffer("boundaries", torch.linspace(-2, 2, 8))
        width = dense + 2 * dim
        self.w1, self.b1 = nn.Parameter(torch.randn(width, 64, generator=g) / width**0.5), nn.Parameter(torch.zeros(64))
        self.w2, self.b2 = nn.Parameter(torch.randn(64, 32, generator=g) / 8), nn.Parameter(torch.zeros(32))
        self.w3, self.b3 = nn.Parameter(torch.randn(32, 1, generator=g) / 32**0.5), nn.Parameter(torch.zeros(1))

    def forward(self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        batch = dense.shape[0]
        rows = torch.searchsorted(offsets[1:], torch.arange(values.shape[0], device=values.device), right=True)
        pooled = torch.zeros(batch, self.table.shape[1], dtype=dense.dtype, device=dense.device)
        pooled = pooled.index_add(0, rows, F.embedding(values, self.table))  # (B, dim): jagged sum
        pooled = pooled / (offsets[1:] - offsets[:-1]).clamp(min=1)[:, None].to(dense.dtype)
        bucket = F.embedding(torch.bucketize(dense[:, 0].contiguous(), self.boundaries), self.bucket_table)
        x = torch.cat([dense, pooled, bucket], dim=-1)  # (B, dense + 2 dim)
        h = torch.relu(torch.addmm(self.b1, x, self.w1))
        h = torch.relu(torch.addmm(self.b2, h, self.w2))
        return torch.sigmoid(torch.addmm(self.b3, h, self.w3))  # (B, 1)


def _jagged_inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (batch,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.randint(0, 500, (int(offsets[-1]),), generator=g)
    return torch.randn(batch, 8, generator=g), values, offsets


# ------------------------------------------------------------------------------------------- DLRM (EmbeddingBag)
class BagDLRM(nn.Module):
    """DLRM as its reference code writes it: bottom MLP, one ``nn.EmbeddingBag`` (sum) per table over fixed-size
    bags, pairwise dot-product interaction by ``bmm``, top MLP."""

    def __init__(self, tables: int = 4, rows: int = 100, dim: int = 16, dense: int = 13, bag: int = 3) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(dense, 32), nn.ReLU(), nn.Linear(32, dim), nn.ReLU())
        self.bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables))
        pairs = (tables + 1) * tables // 2
        self.top = nn.Sequential(nn.Linear(dim + pairs, 32), nn.ReLU(), nn.Linear(32, 1))
        self.bag = bag

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:  # (B, 13), (B, tables, bag)
        x = self.bottom(dense)  # (B, dim)
        feats = torch.stack([x] + [bag(sparse[:, t]) for t, bag in enumerate(self.bags)], dim=1)  # (B, T+1, dim)
        inter = torch.bmm(feats, feats.transpose(1, 2))  # (B, T+1, T+1)
        i, j = torch.tril_indices(feats.shape[1], feats.shape[1], offset=-1)
        return torch.sigmoid(self.top(torch.cat([x, inter[:, i, j]], dim=1)))


def _dlrm_inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 13, generator=g), torch.randint(0, 100, (batch, 4, 3), generator=g)


# Golden counts. GEMMs: every weight GEMM is found; the default policy keeps output heads (by graph position:
# feeding the output) and input projections (reading a model input through views only) in high precision.
CORPUS: dict[str, Entry] = {e.name: e for e in (
    # 2 layers x (q, k, v, o, gate, up, down) + lm_head = 15; the lm_head is the head
    *(Entry(f"{f}-{a}", lambda f=f, a=a: _hf(f, a), _tokens, 0, (15, 14), "transformers")
      for f in ("llama", "qwen2") for a in ("eager", "sdpa")),
    # 2 layers x (c_attn, c_proj, c_fc, mlp c_proj: Conv1D = addmm with a [K, N] weight) + lm_head = 9
    *(Entry(f"gpt2-{a}", lambda a=a: _hf("gpt2", a), _tokens, 0, (9, 8), "transformers") for a in ("eager", "sdpa")),
    # 4 layers x 7 + lm_head = 29; layers 0-2 KSA (fused), layer 3 full
    Entry("ksa-sdpa", SdpaKSAModel, _ksa_tokens, 3, (29, 28)),
    # three addmm layers; the last feeds the output (head)
    Entry("jagged-rec", JaggedRecommender, _jagged_inputs, 0, (3, 2),
          dynamic_dims={"values": {0: "nnz"}, "offsets": {0: "batch+1"}}),
    # bottom 2 (the first reads the dense input: input projection) + top 2 (the last is the head)
    Entry("dlrm-bag", BagDLRM, _dlrm_inputs, 0, (4, 2)),
)}


# --------------------------------------------------------------------------------------------------- the driver
#: the last runs cuda-fp8's passes on the CPU (tests/cuda_fp8_cpu.py)
BACKENDS = ("eager", "inductor", "eager-fp8", "ort", "ort-fp8", "onnx", CUDA_FP8_PASSES)


@dataclasses.dataclass
class Row:
    """One (model, backend) result: numerics on a second batch of another size against the original model."""

    model: str
    backend: str
    ok: bool
    error: str = ""
    max_abs_err: float | None = None
    cosine: float | None = None
    ksa_fused: int | None = None
    gemms: tuple[int, int] | None = None  # (found, quantized) from the FP8 report

    def cells(self) -> list[str]:
        status = "OK" if self.ok else f"error: {self.error[:90]}"
        err = "" if self.max_abs_err is None else f"{self.max_abs_err:.2e}"
        cos = "" if self.cosine is None else f"{self.cosine:.6f}"
        ksa = "" if self.ksa_fused is None else str(self.ksa_fused)
        gemm = "" if self.gemms is None else f"{self.gemms[1]}/{self.gemms[0]}"
        return [self.model, self.backend, status, err, cos, ksa, gemm]


def _worst(reference: object, candidate: object) -> tuple[float, float]:
    from recfx.analysis.numerics import compare_outputs

    checks = [c for c in compare_outputs(reference, candidate) if c.cosine is not None]
    return max(c.max_abs_err or 0.0 for c in checks), min(c.cosine for c in checks)  # type: ignore[type-var]


def evaluate(entry: Entry, backend: str, batches: tuple[int, int] = (2, 3)) -> Row:
    """Compile ``entry`` for ``backend`` (``"onnx"``: export to a file and run it in ONNX Runtime) at the first batch
    size, run it at the second, and compare with the original model."""
    import tempfile

    import recfx
    from recfx.passes.utils import op_histogram

    torch.manual_seed(0)
    model = entry.build().eval()
    inputs, other = entry.inputs(batches[0], 0), entry.inputs(batches[1], 1)
    with torch.no_grad():
        want = model(*other)
    config = recfx.CompileConfig(dynamic_dims=entry.dynamic_dims)
    try:
        if backend == "onnx":
            import onnxruntime

            from recfx.onnx import OnnxExportConfig, export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                written = export_onnx(recfx.compile(model, inputs, backend="eager", config=config), inputs,
                                      f"{tmp}/{entry.name}.onnx", OnnxExportConfig(ksa_as_ops=True))
                session = onnxruntime.InferenceSession(str(written.path), providers=["CPUExecutionProvider"])
                feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), other)}
                got = [torch.from_numpy(o) for o in session.run(None, feeds)]
            err, cos = _worst(want, got[0] if len(got) == 1 else got)
            return Row(entry.name, backend, True, max_abs_err=err, cosine=cos)
        compiled = recfx.compile(model, inputs, backend=backend, config=config)
        err, cos = _worst(want, compiled(*other))
        hist = op_histogram(compiled.graph_module) if compiled.graph_module is not None else {}
        fp8 = compiled.report.sections.get("fp8")
        return Row(entry.name, backend, True, max_abs_err=err, cosine=cos,
                   ksa_fused=hist.get("recfx.ksa_attention.default", 0),
                   gemms=(fp8.linears, fp8.quantized) if fp8 is not None else None)
    except Exception as exc:  # noqa: BLE001  (a corpus row reports any failure)
        return Row(entry.name, backend, False, f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def main(argv: list[str]) -> int:
    """``PYTHONPATH=. python tests/models/corpus.py [model ...] [--backends a,b]``: the corpus table (markdown)."""
    import warnings

    warnings.simplefilter("ignore")
    backends = BACKENDS
    if "--backends" in argv:
        i = argv.index("--backends")
        backends, argv = tuple(argv[i + 1].split(",")), argv[:i] + argv[i + 2:]
    names = argv or [n for n, e in CORPUS.items() if not e.needs or HAS_TRANSFORMERS]
    print("| model | backend | status | max abs err | cosine | KSA fused | GEMMs quantized/found |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for backend in backends:
            print("| " + " | ".join(evaluate(CORPUS[name], backend).cells()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
