
import triton
import triton.language as tl

from torch._inductor.runtime import triton_helpers, triton_heuristics
from torch._inductor.runtime.triton_helpers import libdevice, math as tl_math
from torch._inductor.runtime.hints import AutotuneHint, ReductionHint, TileHint, DeviceProperties
triton_helpers.set_driver_to_gpu()

@triton_heuristics.persistent_reduction(
    size_hints={'x': 65536, 'r0_': 2048},
    reduction_hint=ReductionHint.INNER,
    filename=__file__,
    triton_meta={'signature': {'in_ptr0': '*bf16', 'in_ptr1': '*i64', 'in_ptr2': '*i64', 'in_ptr3': '*bf16', 'in_ptr4': '*bf16', 'in_ptr5': '*bf16', 'in_ptr6': '*bf16', 'out_ptr0': '*bf16', 'out_ptr3': '*fp8e4nv', 'out_ptr4': '*fp32', 'xnumel': 'i32', 'r0_numel': 'i32', 'XBLOCK': 'constexpr'}, 'device': DeviceProperties(type='cuda', index=0, multi_processor_count=132, cc=90, major=9, regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048, max_threads_per_block=1024, warp_size=32), 'constants': {}, 'native_matmul': False, 'enable_fp_fusion': True, 'launch_pdl': False, 'disable_ftz': False, 'configs': [{(0,): [['tt.divisibility', 16]], (1,): [['tt.divisibility', 16]], (2,): [['tt.divisibility', 16]], (3,): [['tt.divisibility', 16]], (4,): [['tt.divisibility', 16]], (5,): [['tt.divisibility', 16]], (6,): [['tt.divisibility', 16]], (7,): [['tt.divisibility', 16]], (8,): [['tt.divisibility', 16]], (9,): [['tt.divisibility', 16]], (10,): [['tt.divisibility', 16]], (11,): [['tt.divisibility', 16]]}]},
    inductor_meta={'grid_type': 'Grid1D', 'autotune_hints': set(), 'kernel_name': 'triton_per_fused__scaled_mm__to_copy_abs_add_amax_cat_clamp_clamp_min_div_embedding_expand_floor_divide_gather_mean_mul_pow_remainder_rsqrt_slice_t_unsqueeze_view_27', 'mutated_arg_names': [], 'optimize_mem': True, 'no_x_dim': None, 'atomic_add_found': False, 'num_load': 8, 'num_store': 3, 'num_reduction': 2, 'backend_hash': '91D1D1166449D9E2EB66EB9770C9E2C3B0FEB787341F27FEB4D3F0338DA50336', 'assert_indirect_indexing': True, 'autotune_local_cache': True, 'autotune_pointwise': True, 'autotune_remote_cache': None, 'force_disable_caches': False, 'dynamic_scale_rblock': True, 'max_autotune': False, 'max_autotune_pointwise': False, 'min_split_scan_rblock': 256, 'spill_threshold': 16, 'store_cubin': False, 'deterministic': False, 'force_filter_reduction_configs': False, 'mix_order_reduction_allow_multi_stages': False, 'are_deterministic_algorithms_enabled': False, 'tiling_scores': {'x': 393216, 'r0_': 805343232}}
)
@triton.jit
def triton_per_fused__scaled_mm__to_copy_abs_add_amax_cat_clamp_clamp_min_div_embedding_expand_floor_divide_gather_mean_mul_pow_remainder_rsqrt_slice_t_unsqueeze_view_27(in_ptr0, in_ptr1, in_ptr2, in_ptr3, in_ptr4, in_ptr5, in_ptr6, out_ptr0, out_ptr3, out_ptr4, xnumel, r0_numel, XBLOCK : tl.constexpr):
    r0_numel = 2048
    R0_BLOCK: tl.constexpr = 2048
    rnumel = r0_numel
    RBLOCK: tl.constexpr = R0_BLOCK
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[:, None]
    xmask = xindex < xnumel
    r0_index = tl.arange(0, R0_BLOCK)[None, :]
    r0_offset = 0
    r0_mask = tl.full([R0_BLOCK], True, tl.int1)[None, :]
    roffset = r0_offset
    rindex = r0_index
    x0 = (xindex % 3)
    r0_3 = r0_index
    x4 = xindex // 3
    x2 = xindex // 1536
    x5 = xindex
    tmp115 = tl.load(in_ptr5 + (r0_3 + 2048*x0), xmask, eviction_policy='evict_last', other=0.0).to(tl.float32)
    tmp123 = tl.load(in_ptr5 + (r0_3 + 2048*((((x5 % 1536)) % 3))), xmask, other=0.0).to(tl.float32)
    tmp132 = tl.load(in_ptr6 + (r0_3), None, eviction_policy='evict_last').to(tl.float32)
    tmp0 = x0
    tmp1 = tl.full([1, 1], 0, tl.int64)
    tmp2 = tmp0 >= tmp1
    tmp3 = tl.full([1, 1], 1, tl.int64)
    tmp4 = tmp0 < tmp3
    tmp5 = tl.load(in_ptr0 + (tl.broadcast_to(r0_3, [XBLOCK, R0_BLOCK])), tmp4 & xmask, eviction_policy='evict_last', other=0.0).to(tl.float32)
    tmp6 = tmp0 >= tmp3
    tmp7 = tl.full([1, 1], 2, tl.int64)
    tmp8 = tmp0 < tmp7
    tmp9 = tmp6 & tmp8
    tmp10 = tl.broadcast_to((-1) + x0, [XBLOCK, R0_BLOCK])
    tmp11 = tl.full([1, 1], 0, tl.int64)
    tmp12 = tmp10 >= tmp11
    tmp13 = tl.full([1, 1], 1, tl.int64)
    tmp14 = tmp10 < tmp13
    tmp15 = tmp14 & tmp9
    tmp16 = tl.load(in_ptr1 + (tl.broadcast_to(x4, [XBLOCK, R0_BLOCK])), tmp15 & xmask, eviction_policy='evict_last', other=0.0)
    tmp17 = tl.full([1, 1], 8192, tl.int64)
    tmp18 = tl.where((tmp16 < 0) != (tmp17 < 0), tl.where(tmp16 % tmp17 != 0, tmp16 // tmp17 - 1, tmp16 // tmp17), tmp16 // tmp17)
    tmp19 = tl.full([1, 1], 512, tl.int32)
    tmp20 = tmp18 + tmp19
    tmp21 = tmp18 < 0
    tmp22 = tl.where(tmp21, tmp20, tmp18)
    tl.device_assert(((0 <= tl.broadcast_to(tmp22, [XBLOCK, R0_BLOCK])) & (tl.broadcast_to(tmp22, [XBLOCK, R0_BLOCK]) < 512)) | ~(tmp15 & xmask), "index out of bounds: 0 <= tl.broadcast_to(tmp22, [XBLOCK, R0_BLOCK]) < 512")
    tmp24 = tl.load(in_ptr2 + (tl.broadcast_to(tmp22 + 512*x2, [XBLOCK, R0_BLOCK])), tmp15 & xmask, eviction_policy='evict_last', other=0.0)
    tmp25 = (tmp24 % tmp17)
    tmp26 = tl.full([1, 1], 0, tl.int32)
    tmp27 = tmp25 != tmp26
    tmp28 = (libdevice.signbit(tmp25) != 0) if (tmp25).dtype is tl.float32 else tmp25 < 0
    tmp29 = (libdevice.signbit(tmp17) != 0) if (tmp17).dtype is tl.float32 else tmp17 < 0
    tmp30 = tmp28 != tmp29
    tmp31 = tmp27 & tmp30
    tmp32 = tmp25 + tmp17
    tmp33 = tl.where(tmp31, tmp32, tmp25)
    tmp34 = tl.full(tmp33.shape, 0.0, tmp33.dtype)
    tmp35 = tl.where(tmp15, tmp33, tmp34)
    tmp36 = tmp10 >= tmp13
    tmp37 = tl.full([1, 1], 2, tl.int64)
    tmp38 = tmp10 < tmp37
    tmp39 = tmp36 & tmp9
    tmp40 = tl.load(in_ptr1 + (tl.broadcast_to(x4, [XBLOCK, R0_BLOCK])), tmp39 & xmask, eviction_policy='evict_last', other=0.0)
    tmp41 = tl.full([1, 1], 8192, tl.int64)
    tmp42 = (tmp40 % tmp41)
    tmp43 = tl.full([1, 1], 0, tl.int32)
    tmp44 = tmp42 != tmp43
    tmp45 = (libdevice.signbit(tmp42) != 0) if (tmp42).dtype is tl.float32 else tmp42 < 0
    tmp46 = (libdevice.signbit(tmp41) != 0) if (tmp41).dtype is tl.float32 else tmp41 < 0
    tmp47 = tmp45 != tmp46
    tmp48 = tmp44 & tmp47
    tmp49 = tmp42 + tmp41
    tmp50 = tl.where(tmp48, tmp49, tmp42)
    tmp51 = tl.full(tmp50.shape, 0.0, tmp50.dtype)
    tmp52 = tl.where(tmp39, tmp50, tmp51)
    tmp53 = tl.where(tmp14, tmp35, tmp52)
    tmp54 = tl.full([1, 1], 8192, tl.int32)
    tmp55 = tmp53 + tmp54
    tmp56 = tmp53 < 0
    tmp57 = tl.where(tmp56, tmp55, tmp53)
    tl.device_assert(((0 <= tl.broadcast_to(tmp57, [XBLOCK, R0_BLOCK])) & (tl.broadcast_to(tmp57, [XBLOCK, R0_BLOCK]) < 8192)) | ~(tmp9 & xmask), "index out of bounds: 0 <= tl.broadcast_to(tmp57, [XBLOCK, R0_BLOCK]) < 8192")
    tmp59 = tl.load(in_ptr3 + (tl.broadcast_to(r0_3 + 2048*tmp57, [XBLOCK, R0_BLOCK])), tmp9 & xmask, other=0.0).to(tl.float32)
    tmp60 = tmp0 >= tmp7
    tmp61 = tl.full([1, 1], 3, tl.int64)
    tmp62 = tmp0 < tmp61
    tmp63 = tl.broadcast_to(1 + ((-2) + x0), [XBLOCK, R0_BLOCK])
    tmp64 = tl.full([1, 1], 0, tl.int64)
    tmp65 = tmp63 >= tmp64
    tmp66 = tl.full([1, 1], 1, tl.int64)
    tmp67 = tmp63 < tmp66
    tmp68 = tmp67 & tmp60
    tmp69 = tl.load(in_ptr1 + (tl.broadcast_to(x4, [XBLOCK, R0_BLOCK])), tmp68 & xmask, eviction_policy='evict_last', other=0.0)
    tmp70 = tl.full([1, 1], 8192, tl.int64)
    tmp71 = tl.where((tmp69 < 0) != (tmp70 < 0), tl.where(tmp69 % tmp70 != 0, tmp69 // tmp70 - 1, tmp69 // tmp70), tmp69 // tmp70)
    tmp72 = tl.full([1, 1], 512, tl.int32)
    tmp73 = tmp71 + tmp72
    tmp74 = tmp71 < 0
    tmp75 = tl.where(tmp74, tmp73, tmp71)
    tl.device_assert(((0 <= tl.broadcast_to(tmp75, [XBLOCK, R0_BLOCK])) & (tl.broadcast_to(tmp75, [XBLOCK, R0_BLOCK]) < 512)) | ~(tmp68 & xmask), "index out of bounds: 0 <= tl.broadcast_to(tmp75, [XBLOCK, R0_BLOCK]) < 512")
    tmp77 = tl.load(in_ptr2 + (tl.broadcast_to(tmp75 + 512*x2, [XBLOCK, R0_BLOCK])), tmp68 & xmask, eviction_policy='evict_last', other=0.0)
    tmp78 = (tmp77 % tmp70)
    tmp79 = tl.full([1, 1], 0, tl.int32)
    tmp80 = tmp78 != tmp79
    tmp81 = (libdevice.signbit(tmp78) != 0) if (tmp78).dtype is tl.float32 else tmp78 < 0
    tmp82 = (libdevice.signbit(tmp70) != 0) if (tmp70).dtype is tl.float32 else tmp70 < 0
    tmp83 = tmp81 != tmp82
    tmp84 = tmp80 & tmp83
    tmp85 = tmp78 + tmp70
    tmp86 = tl.where(tmp84, tmp85, tmp78)
    tmp87 = tl.full(tmp86.shape, 0.0, tmp86.dtype)
    tmp88 = tl.where(tmp68, tmp86, tmp87)
    tmp89 = tmp63 >= tmp66
    tmp90 = tl.full([1, 1], 2, tl.int64)
    tmp91 = tmp63 < tmp90
    tmp92 = tmp89 & tmp60
    tmp93 = tl.load(in_ptr1 + (tl.broadcast_to(x4, [XBLOCK, R0_BLOCK])), tmp92 & xmask, eviction_policy='evict_last', other=0.0)
    tmp94 = tl.full([1, 1], 8192, tl.int64)
    tmp95 = (tmp93 % tmp94)
    tmp96 = tl.full([1, 1], 0, tl.int32)
    tmp97 = tmp95 != tmp96
    tmp98 = (libdevice.signbit(tmp95) != 0) if (tmp95).dtype is tl.float32 else tmp95 < 0
    tmp99 = (libdevice.signbit(tmp94) != 0) if (tmp94).dtype is tl.float32 else tmp94 < 0
    tmp100 = tmp98 != tmp99
    tmp101 = tmp97 & tmp100
    tmp102 = tmp95 + tmp94
    tmp103 = tl.where(tmp101, tmp102, tmp95)
    tmp104 = tl.full(tmp103.shape, 0.0, tmp103.dtype)
    tmp105 = tl.where(tmp92, tmp103, tmp104)
    tmp106 = tl.where(tmp67, tmp88, tmp105)
    tmp107 = tl.full([1, 1], 8192, tl.int32)
    tmp108 = tmp106 + tmp107
    tmp109 = tmp106 < 0
    tmp110 = tl.where(tmp109, tmp108, tmp106)
    tl.device_assert(((0 <= tl.broadcast_to(tmp110, [XBLOCK, R0_BLOCK])) & (tl.broadcast_to(tmp110, [XBLOCK, R0_BLOCK]) < 8192)) | ~(tmp60 & xmask), "index out of bounds: 0 <= tl.broadcast_to(tmp110, [XBLOCK, R0_BLOCK]) < 8192")
    tmp112 = tl.load(in_ptr4 + (tl.broadcast_to(r0_3 + 2048*tmp110, [XBLOCK, R0_BLOCK])), tmp60 & xmask, other=0.0).to(tl.float32)
    tmp113 = tl.where(tmp9, tmp59, tmp112)
    tmp114 = tl.where(tmp4, tmp5, tmp113)
    tmp116 = tmp114 + tmp115
    tmp117 = tmp116 * tmp116
    tmp118 = tmp117.to(tl.float32)
    tmp119 = tl.broadcast_to(tmp118, [XBLOCK, R0_BLOCK])
    tmp121 = tl.where(xmask, tmp119, 0)
    tmp122 = tl.sum(tmp121, 1)[:, None].to(tl.float32)
    tmp124 = tmp114 + tmp123
    tmp125 = tl.full([1, 1], 2048.0, tl.float32)
    tmp126 = (tmp122 / tmp125)
    tmp127 = tmp126.to(tl.float32)
    tmp128 = tl.full([1, 1], 1e-06, tl.float32)
    tmp129 = tmp127 + tmp128
    tmp130 = libdevice.rsqrt(tmp129)
    tmp131 = tmp124 * tmp130
    tmp133 = tmp131 * tmp132
    tmp134 = tmp133.to(tl.float32)
    tmp135 = tl_math.abs(tmp134)
    tmp136 = tl.broadcast_to(tmp135, [XBLOCK, R0_BLOCK])
    tmp138 = tl.where(xmask, tmp136, float("-inf"))
    tmp139 = triton_helpers.max2(tmp138, 1)[:, None].to(tl.float32)
    tmp140 = tl.full([1, 1], 1e-12, tl.float32)
    tmp141 = triton_helpers.maximum(tmp139, tmp140)
    tmp142 = tmp141.to(tl.float64)
    tmp143 = tl.full([1, 1], 0.002232142857142857, tl.float64)
    tmp144 = tmp142 * tmp143
    tmp145 = tmp144.to(tl.float32)
    tmp146 = (tmp134 / tmp145)
    tmp147 = tl.full([1, 1], -448.0, tl.float32)
    tmp148 = triton_helpers.maximum(tmp146, tmp147)
    tmp149 = tl.full([1, 1], 448.0, tl.float32)
    tmp150 = triton_helpers.minimum(tmp148, tmp149)
    tmp151 = tmp150.to(tl.float8e4nv)
    tl.store(out_ptr0 + (r0_3 + 2048*x5), tmp114, xmask)
    tl.store(out_ptr3 + (r0_3 + 2048*x5), tmp151, xmask)
    tl.store(out_ptr4 + (x5), tmp145, xmask)
