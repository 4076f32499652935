// compressed-tensors export (llm-compressor / vLLM / transformers): a quantized checkpoint (ptq's own or an imported
// GPTQ / compressed-tensors one) to a directory those load. The format follows the checkpoint: "pack-quantized" for
// weight-only checkpoints, "int-quantized" when the modules carry 8-bit activation schemes (W8A8).
//
// pack-quantized, per quantized module <m> with W[N, K], b bits (2, 4 or 8: codes never straddle words), G groups
// (FORMATS.md "compressed-tensors"; pack_bits layout of formats.h, code j of a row at bits [j*b, j*b+b) LSB first):
//   <m>.weight_packed     [N, K*b/32] I32  row n = stream of the stored codes; a stored code is the signed value
//                                          + 2^(b-1), which is exactly ptq's unsigned code q
//   <m>.weight_scale      [N, G] float_dtype (F16 or F32; the fp16 scales are kept bit for bit; BF16 is refused)
//   <m>.weight_shape      [2] I64          [N, K]
//   <m>.weight_zero_point [N*b/32, G] I32  asymmetric only; column g = stream of zero[0..N, g] (signed zero +
//                                          2^(b-1) = ptq's unsigned zero), packed along N
//   <m>.weight_g_idx      [K] I32          act-ordered modules only (actorder "group")
// Dequantize: w = scale * ((stored - 2^(b-1)) - (zero - 2^(b-1))) = scale * (q - zero), as ptq.
//
// int-quantized (compressed-tensors' IntQuantizationCompressor, the "naive" layout: one integer per element, signed),
// per module with 8-bit weights and an 8-bit activation scheme:
//   <m>.weight            [N, K] I8        q - 128 (ptq's unsigned code as a signed int8)
//   <m>.weight_scale      [N, G] float_dtype  G = 1: strategy "channel"; else "group" with group_size K/G
//   <m>.weight_zero_point [N, G] I8        asymmetric weights only: zero - 128
//   <m>.weight_g_idx      [K] I32          act-ordered modules only
//   <m>.input_scale       [1] F32          static ("tensor") activations: ptq's fp32 step, bit for bit (vLLM loads it
//                                          as float32; compressed-tensors itself would write the model dtype, which
//                                          would round it)
//   <m>.input_zero_point  [1] I8           static asymmetric activations only: zero - 128
// Dequantize: w = scale * (weight - zero_point); x̂ = input_scale * (clamp(round(x / input_scale) + input_zero_point,
// -128, 127) - input_zero_point): ptq's grid shifted by 128, the same values. config_groups carry "input_activations"
// {num_bits 8, type int, symmetric, strategy "tensor" + dynamic false (static) or "token" + dynamic true}.
// What int-quantized cannot carry is refused before anything is written (int_quantized_activation_gap, and the
// checks every exporter makes: refuse_nonstandard in gptq_export.h): activation bits other than 8, per-channel
// activation scales, a dynamic scheme with a clip ratio (runtimes compute the plain absmax per token), weights other
// than 8-bit, and weight-only modules beside activation-quantized ones (vLLM accepts an int-quantized group without
// input_activations only for float weights). Asymmetric activations are written (compressed-tensors and vLLM's int8
// kernels take an input zero point). vLLM's int8 W8A8 kernels take symmetric per-channel weights only: grouped or
// asymmetric 8-bit weights are written (transformers decompresses them) and reported as notes.
//
// config_groups: one group per distinct scheme (weights + input activations). With one scheme its targets are
// ["Linear"] and "ignore" lists lm_head and every decoder linear module not quantized; with several, each group
// targets its modules by exact name. pack-quantized: a module whose K*b (or, asymmetric, N*b) is not a multiple of
// 32, or with 3 bits, is refused with the list, or kept float (keep_unpackable_float) and added to "ignore".
#pragma once

#include <string>

#include "export/gptq_export.h"

namespace ptq {

PackedExportReport export_compressed_tensors(const std::string& model_dir, const std::string& out_dir,
                                             const PackedExportOptions& opts);

// Why int-quantized cannot carry module `info` with its activation scheme ("" when it can).
std::string int_quantized_activation_gap(const ModuleQuantInfo& info);

}  // namespace ptq
