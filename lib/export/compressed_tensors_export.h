// compressed-tensors "pack-quantized" export (llm-compressor / vLLM), weight-only: a quantized checkpoint (ptq's
// own or an imported GPTQ / compressed-tensors one) to a directory vLLM and transformers load.
//
// Per quantized module <m> with W[N, K], b bits (2, 4 or 8: codes never straddle words), G groups
// (FORMATS.md "compressed-tensors"; pack_bits layout of formats.h, code j of a row at bits [j*b, j*b+b) LSB first):
//   <m>.weight_packed     [N, K*b/32] I32  row n = stream of the stored codes; a stored code is the signed value
//                                          + 2^(b-1), which is exactly ptq's unsigned code q
//   <m>.weight_scale      [N, G] float_dtype (F16 or F32; the fp16 scales are kept bit for bit; BF16 is refused)
//   <m>.weight_shape      [2] I64          [N, K]
//   <m>.weight_zero_point [N*b/32, G] I32  asymmetric only; column g = stream of zero[0..N, g] (signed zero +
//                                          2^(b-1) = ptq's unsigned zero), packed along N
//   <m>.weight_g_idx      [K] I32          act-ordered modules only (actorder "group")
// Dequantize: w = scale * ((stored - 2^(b-1)) - (zero - 2^(b-1))) = scale * (q - zero), as ptq.
// config_groups: one group per distinct (bits, group size, sym, actorder) scheme. With one scheme its targets are
// ["Linear"] and "ignore" lists lm_head and every decoder linear module not packed; with several, each group
// targets its modules by exact name. A module whose K*b (or, asymmetric, N*b) is not a multiple of 32, or with
// 3 bits, is refused with the list, or kept float (keep_unpackable_float) and added to "ignore".
#pragma once

#include <string>

#include "export/gptq_export.h"

namespace ptq {

PackedExportReport export_compressed_tensors(const std::string& model_dir, const std::string& out_dir,
                                             const PackedExportOptions& opts);

}  // namespace ptq
