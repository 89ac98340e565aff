
import triton
import triton.language as tl

from torch._inductor.runtime import triton_helpers, triton_heuristics
from torch._inductor.runtime.triton_helpers import libdevice, math as tl_math
from torch._inductor.runtime.hints import AutotuneHint, ReductionHint, TileHint, DeviceProperties
triton_helpers.set_driver_to_gpu()

@triton_heuristics.pointwise(
    size_hints={'y': 262144, 'x': 512}, tile_hint=TileHint.DEFAULT,
    filename=__file__,
    triton_meta={'signature': {'in_ptr0': '*i1', 'in_ptr1': '*fp32', 'in_ptr2': '*fp32', 'in_ptr3': '*fp32', 'in_ptr4': '*bf16', 'out_ptr0': '*fp32', 'ynumel': 'i32', 'xnumel': 'i32', 'YBLOCK': 'constexpr', 'XBLOCK': 'constexpr'}, 'device': DeviceProperties(type='cuda', index=0, multi_processor_count=132, cc=90, major=9, regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048, max_threads_per_block=1024, warp_size=32), 'constants': {}, 'native_matmul': False, 'enable_fp_fusion': True, 'launch_pdl': False, 'disable_ftz': False, 'configs': [{(0,): [['tt.divisibility', 16]], (1,): [['tt.divisibility', 16]], (2,): [['tt.divisibility', 16]], (3,): [['tt.divisibility', 16]], (4,): [['tt.divisibility', 16]], (5,): [['tt.divisibility', 16]], (6,): [['tt.divisibility', 16]], (7,): [['tt.divisibility', 16]]}]},
    inductor_meta={'grid_type': 'Grid2DWithYZOverflow', 'autotune_hints': set(), 'kernel_name': 'triton_poi_fused__softmax__to_copy_exp_logical_not_masked_fill_mul_prepare_softmax_online_sub_sum_transpose_unsqueeze_view_33', 'mutated_arg_names': [], 'optimize_mem': True, 'no_x_dim': False, 'atomic_add_found': False, 'num_load': 11, 'num_store': 1, 'num_reduction': 0, 'backend_hash': '91D1D1166449D9E2EB66EB9770C9E2C3B0FEB787341F27FEB4D3F0338DA50336', 'assert_indirect_indexing': True, 'autotune_local_cache': True, 'autotune_pointwise': True, 'autotune_remote_cache': None, 'force_disable_caches': False, 'dynamic_scale_rblock': True, 'max_autotune': False, 'max_autotune_pointwise': False, 'min_split_scan_rblock': 256, 'spill_threshold': 16, 'store_cubin': False, 'deterministic': False, 'force_filter_reduction_configs': False, 'mix_order_reduction_allow_multi_stages': False, 'are_deterministic_algorithms_enabled': False, 'tiling_scores': {'y': 9437184, 'x': 1006632960}},
    min_elem_per_thread=0
)
@triton.jit
def triton_poi_fused__softmax__to_copy_exp_logical_not_masked_fill_mul_prepare_softmax_online_sub_sum_transpose_unsqueeze_view_33(in_ptr0, in_ptr1, in_ptr2, in_ptr3, in_ptr4, out_ptr0, ynumel, xnumel, YBLOCK : tl.constexpr, XBLOCK : tl.constexpr):
    xnumel = 384
    yoffset = (tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)) * YBLOCK
    yindex = yoffset + tl.arange(0, YBLOCK)[:, None]
    ymask = yindex < ynumel
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[None, :]
    xmask = xindex < xnumel
    x3 = xindex // 128
    y0 = (yindex % 16)
    y1 = yindex // 16
    y4 = yindex
    x2 = (xindex % 128)
    tmp0 = tl.load(in_ptr0 + (3*x3), xmask, eviction_policy='evict_last').to(tl.int1)
    tmp2 = tl.load(in_ptr1 + (y0 + 48*x3 + 144*y1), xmask & ymask, eviction_policy='evict_last')
    tmp5 = tl.load(in_ptr2 + (x3 + 3*y4), xmask & ymask, eviction_policy='evict_last')
    tmp8 = tl.load(in_ptr3 + (x3 + 3*y4), xmask & ymask, eviction_policy='evict_last')
    tmp10 = tl.load(in_ptr4 + (x2 + 128*y0 + 6144*y1), xmask & ymask, eviction_policy='evict_last').to(tl.float32)
    tmp13 = tl.load(in_ptr0 + (1 + 3*x3), xmask, eviction_policy='evict_last').to(tl.int1)
    tmp15 = tl.load(in_ptr1 + (16 + y0 + 48*x3 + 144*y1), xmask & ymask, eviction_policy='evict_last')
    tmp20 = tl.load(in_ptr4 + (2048 + x2 + 128*y0 + 6144*y1), xmask & ymask, eviction_policy='evict_last').to(tl.float32)
    tmp24 = tl.load(in_ptr0 + (2 + 3*x3), xmask, eviction_policy='evict_last').to(tl.int1)
    tmp26 = tl.load(in_ptr1 + (32 + y0 + 48*x3 + 144*y1), xmask & ymask, eviction_policy='evict_last')
    tmp31 = tl.load(in_ptr4 + (4096 + x2 + 128*y0 + 6144*y1), xmask & ymask, eviction_policy='evict_last').to(tl.float32)
    tmp1 = tmp0 == 0
    tmp3 = tl.full([1, 1], float("-inf"), tl.float32)
    tmp4 = tl.where(tmp1, tmp3, tmp2)
    tmp6 = tmp4 - tmp5
    tmp7 = libdevice.exp(tmp6)
    tmp9 = (tmp7 / tmp8)
    tmp11 = tmp10.to(tl.float32)
    tmp12 = tmp9 * tmp11
    tmp14 = tmp13 == 0
    tmp16 = tl.where(tmp14, tmp3, tmp15)
    tmp17 = tmp16 - tmp5
    tmp18 = libdevice.exp(tmp17)
    tmp19 = (tmp18 / tmp8)
    tmp21 = tmp20.to(tl.float32)
    tmp22 = tmp19 * tmp21
    tmp23 = tmp12 + tmp22
    tmp25 = tmp24 == 0
    tmp27 = tl.where(tmp25, tmp3, tmp26)
    tmp28 = tmp27 - tmp5
    tmp29 = libdevice.exp(tmp28)
    tmp30 = (tmp29 / tmp8)
    tmp32 = tmp31.to(tl.float32)
    tmp33 = tmp30 * tmp32
    tmp34 = tmp23 + tmp33
    tl.store(out_ptr0 + (x2 + 128*y0 + 2048*x3 + 6144*y1), tmp34, xmask & ymask)
