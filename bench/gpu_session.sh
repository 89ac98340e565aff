#!/usr/bin/env bash
# One step of a GPU benchmarking session, results under OUT (each step fits one 10-minute device call).
#
#   bash bench/gpu_session.sh STEP OUT COMMIT [more bench/fp8.py options, e.g. --cuda-graphs both]
#
# STEP: 1b       onerec-1b: inductor, cuda-fp8, eager at batches 1, 8, 32, each backend profiled at batch 32
#       1b-all   onerec-1b: inductor, cuda-fp8, torchao's PerRow FP8 + torch.compile and eager at batches 8 and 32, in
#                one process (every onerec-1b target of issue 15 in one run; needs the wheel; ~8-9 minutes cold)
#       torchao  onerec-1b: inductor and torchao's PerRow FP8 + torch.compile at batches 1, 8, 32 (needs the wheel)
#       moe      onerec-moe: inductor at batches 8 and 32, profiled (~310 s cold)
#       moe-fp8  onerec-moe: cuda-fp8 at batches 8 and 32, profiled (run on the same warm machine as moe: the
#                two compiles do not fit one 10-minute call)
#       moe-v2   onerec-moe: cuda-fp8 with the OneRec-V2 recipe (block-scaled experts on recfx::fp8_block_mm) at 8, 32
#       rows     the A/B of recfx's persistent-reduction limit at batch 32, in one process: cuda-fp8 with its 8,192
#                and with Inductor's own 1,024 (Inductor's caches key on the limit)
#       regions  onerec-1b: inductor bf16 flat (first: it pays the process's warm-up), cuda-fp8 flat and cuda-fp8
#                with repeated blocks compiled once (backend option regions), at batches 8 and 32 in one process:
#                compile time and speed (not run yet; estimated 7-9 minutes cold)
#       issue    onerec-1b: inductor bf16 and cuda-fp8 (its defaults) at batches 8 and 32, profiled: issue 15's
#                batch-8 and batch-32 ratios (~5-6 minutes cold)
#       defaults-ab  onerec-1b: cuda-fp8 without (cuda-fp8-off) and with its run-11 defaults (realize_permuted,
#                silu_quant_kernel) at batches 8 and 32, in one process (~6-7 minutes cold)
#       anyrows  onerec-1b: inductor bf16 with its default persistent_layout='contiguous' and with 'any' (whole-row
#                reductions also for rows read through permutes or recomputed, e.g. tiny attention's scores) at 8
#                and 32: whether the bf16 backend should default to 'any' as cuda-fp8 does (~5 minutes cold)
#       anyrows-fp8  the same A/B for cuda-fp8 (its default 'any' against 'contiguous'; run 10 measured 1.03-1.04x)
#       autotune onerec-1b: cuda-fp8 and cuda-fp8 under mode max-autotune-no-cudagraphs (Inductor measures cuBLAS
#                against its Triton FP8 GEMM templates per shape and may fuse epilogues) at 8 and 32 (compile time
#                unknown: autotuning ~12 GEMM shapes; may not fit one call)
#       attn     onerec-1b: cuda-fp8 and cuda-fp8-attn (its opt-in FP8 attention) at batches 1, 8, 32, profiled
#       deploy   bundles (onerec-1b cuda-fp8, ksa-1b inductor: load + first call) and the KSA kernel checks
#       deploy-1b   the onerec-1b cuda-fp8 bundle alone (compile, save, load + first call: ~8-10 minutes cold)
#       deploy-ksa  the ksa-1b inductor bundle alone
#                   Both keep the bundle in build/ (kept on a warm machine) and resume there: when a call ends
#                   after the save, the next call on the same machine only loads and calls it.
#       deploy-tiny ksa-tiny inductor (batch 2) and onerec-tiny cuda-fp8 (batch 8) bundles: where outputs of a loaded
#                   bundle differ from the compiling process's (ksa-tiny ~2 minutes cold with Inductor's code logged;
#                   onerec-tiny had not finished 75 s later in run 9: allow 5+ minutes for both)
#       aoti-diag   where loading an AOTInductor bundle crashes on the GPU (bench/probes/aoti_load.py: small and
#                   1.1 GB bundles, with and without recfx ops, with and without mmapped weights; ~4-5 minutes)
#       demo     what `make demo` runs (`recfx demo`: onerec-1b on eager, auto and auto-fp8 at batch 8, then the FP8
#                summary), without make's CPU venv set-up (~5-6 minutes cold; extra options do not apply)
#       layers   onerec-1b cut to 2 decoder layers (real widths, context, beam) at batch 32: inductor bf16 and cuda-fp8
#                variants (bench/probes/layer_ab.py's DEFAULT_VARIANTS: cuda-fp8 with and without run 11's defaults,
#                bf16 with persistent_layout "any", coordinate-descent tuning), compiled one after the other in one
#                process, each profiled with its heaviest kernels' sources (~30-50 s a variant cold; rows written as
#                they end; extra options go to layer_ab.py, e.g. --layers 4 --variant NAME=BACKEND:{json})
#       siluq    SiLU(gate) x up quantized per row at onerec-1b's shapes: Inductor's kernel (recfx's and Inductor's own
#                persistent limit), bf16 SiLU x up, and hand-written Triton kernels (bench/probes/silu_quant.py; ~1 min)
#       block    the block-scaled FP8 GEMM kernel (recfx::fp8_block_mm) vs row-wise _scaled_mm and bf16 (~1-2 min)
# COMMIT: the commit whose working tree runs (the device copy's git HEAD may be stale).
set -u
step=$1
out=$2
commit=${3:-unknown}
shift 3 2>/dev/null || shift $#
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
echo "$commit" > "$out/COMMIT.txt"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    > "$out/machine.txt" 2>&1
extra=("$@")
fp8() { python3 bench/fp8.py --parts bench --cuda-graphs off --time-budget 0.5 --bench-profile "$@" ${extra[@]+"${extra[@]}"}; }
case $step in
    1b) fp8 --model onerec-1b --backends inductor,cuda-fp8,eager --batches 1,8,32 --out "$out" ;;
    1b-all) fp8 --model onerec-1b --backends inductor,cuda-fp8,torchao-fp8,eager --batches 8,32 --out "$out" ;;
    torchao) fp8 --model onerec-1b --backends inductor,torchao-fp8 --batches 1,8,32 --out "$out" ;;
    moe) fp8 --model onerec-moe --backends inductor --batches 8,32 --out "$out" ;;
    moe-fp8) fp8 --model onerec-moe --backends cuda-fp8 --batches 8,32 --out "$out" ;;
    moe-v2) fp8 --model onerec-moe --backends cuda-fp8-v2 --batches 8,32 --out "$out" ;;
    rows) fp8 --model onerec-1b --backends cuda-fp8,cuda-fp8-rows1024 --batches 32 --out "$out" ;;
    regions) fp8 --model onerec-1b --backends inductor-flat,cuda-fp8-flat,cuda-fp8-regions --batches 8,32 \
        --out "$out" ;;
    issue) fp8 --model onerec-1b --backends inductor,cuda-fp8 --batches 8,32 --out "$out" ;;
    defaults-ab) fp8 --model onerec-1b --backends cuda-fp8-off,cuda-fp8 --batches 8,32 --out "$out" ;;
    anyrows) fp8 --model onerec-1b --backends inductor,inductor-anyrows --batches 8,32 --out "$out" ;;
    anyrows-fp8) fp8 --model onerec-1b --backends cuda-fp8-contigrows,cuda-fp8 --batches 8,32 --out "$out" ;;
    autotune) fp8 --model onerec-1b --backends cuda-fp8,cuda-fp8-autotune --batches 8,32 --out "$out" ;;
    attn) fp8 --model onerec-1b --backends cuda-fp8,cuda-fp8-attn --batches 1,8,32 --out "$out" ;;
    deploy)
        python3 bench/ksa.py --parts checks --sizes 4096,16384 --skip-flex --out "$out/ksa_checks.json" \
            > "$out/ksa_checks.log" 2>&1
        for job in "onerec-1b cuda-fp8 8" "ksa-1b inductor 1"; do  # bundles in /tmp: only result.json comes back
            set -- $job
            python3 bench/bundle_gpu.py --model "$1" --backend "$2" --batch "$3" --out "/tmp/bundle-$1" \
                > "$out/bundle-$1.log" 2>&1
            cp "/tmp/bundle-$1/result.json" "$out/bundle-$1.json"
        done ;;
    deploy-tiny)
        for job in "ksa-tiny inductor 2" "onerec-tiny cuda-fp8 8"; do
            set -- $job
            # with Inductor's generated code in the log: the in-process module's and the package's, to compare
            TORCH_LOGS=output_code python3 bench/bundle_gpu.py --model "$1" --backend "$2" --batch "$3" \
                --out "/tmp/bundle-$1" > "$out/bundle-$1.log" 2>&1
            cp "/tmp/bundle-$1/result.json" "$out/bundle-$1.json"
        done ;;
    aoti-diag) python3 bench/probes/aoti_load.py --out "$out/aoti" > "$out/aoti.log" 2>&1 ;;
    demo) python3 -m recfx.tools.cli demo > "$out/demo.log" 2>&1 ;;
    layers) python3 bench/probes/layer_ab.py --out "$out/layers" ${extra[@]+"${extra[@]}"} > "$out/layers.log" 2>&1 ;;
    siluq) python3 bench/probes/silu_quant.py "$out/silu_quant.json" > "$out/silu_quant.log" 2>&1 ;;
    block) python3 bench/probes/block_gemm.py "$out/block_gemm.json" > "$out/block_gemm.log" 2>&1 ;;
    deploy-1b|deploy-ksa)
        case $step in deploy-1b) job="onerec-1b cuda-fp8 8" ;; *) job="ksa-1b inductor 1" ;; esac
        set -- $job
        python3 bench/bundle_gpu.py --model "$1" --backend "$2" --batch "$3" --out "build/bundle-$1" --resume \
            >> "$out/bundle-$1.log" 2>&1
        cp "build/bundle-$1/result.json" "$out/bundle-$1.json" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
esac
status=$?  # the step's own status (the kernel-source copy below does not change it)
for bench in "$out"/*/bench.json; do  # the profiled kernels' Triton sources, to read what the heaviest ones compute
    [ -f "$bench" ] || continue  # (bench/fp8.py writes OUT/<model>/bench.json)
    python3 bench/probes/kernel_sources.py "$bench" "$(dirname "$bench")/kernels" >> "$out/kernels.log" 2>&1
done
exit $status
