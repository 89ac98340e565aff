"""recfx.serving.serve under load: onerec-tiny and dlrm-small on one Triton server (PyTriton), 8 concurrent clients
x 50 requests of mixed batch sizes over HTTP and gRPC, each answer compared with the in-process compiled module;
bad requests answered 400 while good ones keep succeeding; a model that raises leaves the server up."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from recfx.serving.health import free_ports
from tests.serving.support import infer_inputs, require_serve

require_serve()

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402

import recfx  # noqa: E402
from recfx.models import get_model  # noqa: E402
from recfx.serving import ModelServing, ServerAddress, serve  # noqa: E402

MODELS = ("onerec-tiny", "dlrm-small")
CLIENTS, REQUESTS = 8, 50  # 4 HTTP + 4 gRPC clients, 50 requests each
ONEREC_EVERY = 5  # every 5th request of a client goes to onerec-tiny (~0.5 s a call here), the rest to dlrm-small
BATCHES = {"onerec-tiny": (1, 2, 3), "dlrm-small": (1, 2, 3, 5, 8)}
POOL = 2  # distinct inputs per (model, batch size): their in-process answers are computed once
MAX_BATCH = 8
# Dynamic batching runs a request inside a larger batch: float GEMMs then block (and round) differently than the
# in-process call at the request's own batch size. Integer outputs (onerec's item ids) must be equal; float32
# outputs within a few ulps of float32 (observed <= 2e-6 absolute on scores of order 1).
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, recfx.CompiledModule]:
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECFX_DEBUG", "0")  # the passes' invariant checks are tested elsewhere; this is about serving
        for name in MODELS:
            spec = get_model(name)
            out[name] = recfx.compile(spec.build(), spec.example_inputs(2), backend="eager")
    # dlrm-small is served from a saved bundle: loaded, not recompiled
    bundle = out["dlrm-small"].save(tmp_path_factory.mktemp("bundles") / "dlrm-small")
    out["dlrm-small"] = recfx.load(bundle)
    return out


@pytest.fixture(scope="module")
def pool(modules: dict[str, recfx.CompiledModule]) -> dict[tuple[str, int, int], tuple]:
    """(model, batch, k) -> (inputs, the in-process module's outputs): what the clients send and expect."""
    out = {}
    for name in MODELS:
        spec = get_model(name)
        for b in BATCHES[name]:
            for k in range(POOL):
                inputs = spec.example_inputs(b, seed=100 * b + k)
                out[name, b, k] = inputs, [w.numpy() for w in torch.utils._pytree.tree_leaves(modules[name](*inputs))]
    return out


def _check(want: list[np.ndarray], got: list[np.ndarray]) -> bool:
    """Assert the served outputs match the in-process module's; return whether they are bit-identical."""
    assert len(got) == len(want)
    exact = True
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
        else:
            np.testing.assert_array_equal(g, w)
        exact &= bool(np.array_equal(g, w))
    return exact


def _post(url: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _bad_requests(http: str) -> list[tuple[str, dict, str]]:
    """(url, body, text the error must contain): wrong shape, wrong dtype, missing input, oversized batch."""
    url = f"{http}/v2/models/dlrm-small/infer"
    dense = {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": [0.5] * 13}
    sparse = {"name": "sparse", "shape": [1, 8], "datatype": "INT64", "data": [1] * 8}
    return [
        (url, {"inputs": [{**dense, "shape": [1, 12], "data": [0.5] * 12}, sparse]},
         "unexpected shape for input 'dense'"),
        (url, {"inputs": [{**dense, "datatype": "FP64"}, sparse]}, "inference input 'dense' data-type is 'FP64'"),
        (url, {"inputs": [dense]}, "missing required input(s) ['sparse']"),
        (url, {"inputs": [{**dense, "shape": [MAX_BATCH + 1, 13], "data": [0.5] * 13 * (MAX_BATCH + 1)},
                          {**sparse, "shape": [MAX_BATCH + 1, 8], "data": [1] * 8 * (MAX_BATCH + 1)}]},
         f"batch-size must be <= {MAX_BATCH}"),
    ]


def test_serve_under_load(modules: dict[str, recfx.CompiledModule], pool: dict, tmp_path) -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    address = ServerAddress("127.0.0.1", http_port, grpc_port, metrics_port)
    serving = ModelServing(max_batch=MAX_BATCH, dynamic_batching=True, queue_delay_us=2000, instances=2)
    specs = {name: get_model(name) for name in MODELS}
    results: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    errors: list[str] = []
    bad_status: list[tuple[int, str, str]] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    with serve(modules, serving, address, triton_log=tmp_path / "triton.log") as server:
        started = time.perf_counter() - t0
        assert set(server.models) == set(MODELS) and server.running
        c = thttp.InferenceServerClient(f"127.0.0.1:{http_port}")
        for name in MODELS:  # what Triton was told: the module's signature, batching and instances
            cfg = c.get_model_config(name)
            assert cfg["max_batch_size"] == MAX_BATCH and cfg["instance_group"][0]["count"] == 2
            assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
            assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in cfg["input"]] == [
                (s.name, f"TYPE_{server.models[name].signature.inputs[k].triton_dtype}", list(s.shape[1:]))
                for k, s in enumerate(modules[name].input_specs)]
        c.close()

        def client(k: int) -> None:
            rng = random.Random(k)
            grpc = k % 2 == 1
            lib = tgrpc if grpc else thttp
            c = tgrpc.InferenceServerClient(address.grpc_url) if grpc else thttp.InferenceServerClient(
                f"127.0.0.1:{http_port}")
            try:
                for i in range(REQUESTS):
                    name = "onerec-tiny" if (k + i) % ONEREC_EVERY == 0 else "dlrm-small"
                    inputs, want = pool[name, rng.choice(BATCHES[name]), rng.randrange(POOL)]
                    names = [s.name for s in modules[name].input_specs]
                    try:
                        r = c.infer(name, infer_inputs(lib, names, inputs))
                        got = [r.as_numpy(s.name) for s in modules[name].output_specs]
                    except Exception as exc:  # noqa: BLE001 -- every failure is counted and reported
                        with lock:
                            errors.append(f"client {k} request {i} ({name}): {exc}")
                        continue
                    with lock:
                        results.append((want, got))
            finally:
                c.close()

        def bad_client() -> None:
            for _ in range(3):
                for url, body, expect in _bad_requests(address.http_url):
                    status, text = _post(url, body)
                    bad_status.append((status, text, expect))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        threads.append(threading.Thread(target=bad_client))
        t1 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        load_s = time.perf_counter() - t1
        assert not any(t.is_alive() for t in threads), "clients did not finish in 120 s"

        # a model that raises (an item id past dlrm's embedding tables): the batch fails, the server stays up
        status, text = _post(f"{address.http_url}/v2/models/dlrm-small/infer", {"inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": [0.5] * 13},
            {"name": "sparse", "shape": [1, 8], "datatype": "INT64", "data": [10**9] * 8}]})
        assert status >= 400 and "index" in text.lower(), (status, text[:500])
        inputs = specs["dlrm-small"].example_inputs(2, seed=7)
        status, text = _post(f"{address.http_url}/v2/models/dlrm-small/infer", {"inputs": [
            {"name": s.name, "shape": list(x.shape), "datatype": "FP32" if x.is_floating_point() else "INT64",
             "data": x.flatten().tolist()} for s, x in zip(modules["dlrm-small"].input_specs, inputs)]})
        assert status == 200, text[:500]
        with urllib.request.urlopen(address.metrics_url, timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'nv_inference_request_success{model="onerec-tiny"' in metrics
        assert server.running
    assert not server.running

    assert not errors, f"{len(errors)} of {CLIENTS * REQUESTS} requests failed: {errors[:3]}"
    assert len(results) == CLIENTS * REQUESTS
    assert len(bad_status) == 12
    for status, text, expect in bad_status:
        assert status == 400 and expect in text, (status, text, expect)
    exact = sum(_check(want, got) for want, got in results)
    print(f"\nserved {len(results)} requests in {load_s:.1f} s (server up in {started:.1f} s); {exact} bit-identical "
          f"to the in-process module, the rest within rtol {RTOL} / atol {ATOL} (dynamic batching)")


def test_without_dynamic_batching_answers_are_bit_identical(modules: dict[str, recfx.CompiledModule], pool: dict,
                                                            tmp_path) -> None:
    """Each request runs alone at its own batch size: the same numbers as the in-process call, bit for bit."""
    ports = free_ports(3)
    address = ServerAddress("127.0.0.1", *ports)
    with serve(modules, ModelServing(dynamic_batching=False), address, triton_log=tmp_path / "triton.log"):
        c = tgrpc.InferenceServerClient(address.grpc_url)
        try:
            for name, b in (("onerec-tiny", 3), ("dlrm-small", 1), ("dlrm-small", 5), ("dlrm-small", 8)):
                inputs, want = pool[name, b, 0]
                r = c.infer(name, infer_inputs(tgrpc, [s.name for s in modules[name].input_specs], inputs))
                got = [r.as_numpy(s.name) for s in modules[name].output_specs]
                assert _check(want, got), f"{name} batch {b}: not bit-identical"
        finally:
            c.close()


def test_dynamic_batching_of_an_unbatchable_module_is_refused() -> None:
    class TwoBatches(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            return x + y + table.sum(0)

    model = TwoBatches().eval()

    # x and y share the dynamic batch; table's dim 0 is a static 3: requests cannot be concatenated along dim 0
    fast = recfx.compile(model, (torch.randn(2, 4), torch.randn(2, 4), torch.randn(3, 4)), backend="eager")
    with pytest.raises(ValueError, match="cannot be dynamically batched: dim 0 of its inputs and outputs"):
        serve({"two": fast}, ModelServing(dynamic_batching=True))


def test_a_taken_port_is_named_before_triton_starts(modules: dict[str, recfx.CompiledModule]) -> None:
    import socket

    http, grpc, metrics = free_ports(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", grpc))
        busy.listen()
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=f"the gRPC port {grpc} on 127.0.0.1 is not free.*--grpc-port"):
            serve(modules, ModelServing(), ServerAddress("127.0.0.1", http, grpc, metrics))
        assert time.perf_counter() - t0 < 5  # not Triton's one-minute startup timeout
