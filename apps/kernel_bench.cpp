// ptq_kernel_bench: the kernels layer's benchmark and CUDA probe, without LibTorch (it builds with
// -DPTQ_KERNELS_ONLY=ON where only a compiler and nvcc exist). Prints one JSON object per line on stdout.
//
//   ptq_kernel_bench --cuda-check   the CUDA device and which GEMM runs FP16 (exit 0), or why there is none (exit 77)
//   ptq_kernel_bench [--quick] [--repeats N] [--cpu-only]
//     {"bench":"machine"}        CPU instruction set, OpenMP threads, measured read bandwidth; the CUDA device if any,
//                                with the cuBLAS library loaded or why it is unavailable
//     {"bench":"cpu_gemv"}       linear() at one token per weight kind: GB/s of weights and the share of bandwidth
//     {"bench":"cpu_act_module"} an activation-quantized module of a 1.1B shape (TinyLlama: hidden 2048, ffn 5632) on
//                                the byte kernels, static per-tensor codes against per-token dynamic codes, at 1 and
//                                64 tokens: what static codes can save (AVX-512 VNNI only; a "skipped" line elsewhere)
//     {"bench":"cuda_gemv"}      the same on the device, against the device's peak bandwidth
//     {"bench":"cuda_gemm"}      linear / int_linear at 512 tokens: TFLOP/s (2·m·n·k / s)
//     {"bench":"cuda_layer"}     the seven linear modules of one 7B-shaped decoder layer (Llama-2-7B: hidden 4096,
//                                ffn 11008) per scheme at batch 1, 16 and a 512-token prefill, with the ratio to FP16
//                                (speedup_vs_fp16; fp16_gemm: the kernel that ran the FP16 baseline)
// FP16 runs twice: on cuBLAS, the baseline (FloatGemm::Cublas), then on ptq's own hmma kernel (FloatGemm::Own); the
// weight-only lines say in "gemm" which kernel of linear_cuda.h ran (gemv at 1 token). Where cuBLAS is unavailable
// the own kernel is the baseline and runs once.
// Timing: best of --repeats (default 5) runs of `inner` calls each, after one warm-up call; the device is
// synchronized before and after each run. --quick: small shapes (a smoke test that the bench runs).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.h"
#include "kernels/bandwidth.h"
#include "kernels/cpu_features.h"
#include "kernels/cuda/cublas.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int_linear_cuda.h"
#include "kernels/cuda/linear_cuda.h"
#include "kernels/gptq_ops.h"
#include "kernels/int_linear.h"
#include "kernels/linear.h"

namespace {

namespace k = ptq::kernels;
namespace cu = ptq::kernels::cuda;

struct Options {
  bool quick = false, cpu_only = false, gptq_host_emulation = false;
  int repeats = 5;
};

// Seconds per call: best of `repeats` runs of `inner` calls (after a warm-up call); `sync` waits for the device.
double time_call(const std::function<void()>& call, const std::function<void()>& sync, int repeats, int inner) {
  call();
  sync();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) call();
    sync();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / inner);
  }
  return best;
}

// A weight kind of the bench: F16, or b-bit codes in groups of `group` columns (symmetric).
struct Scheme {
  const char* name;
  bool quant;
  int bits;
  int64_t group;  // 0: one group per row
};
const Scheme kWeightSchemes[] = {{"f16", false, 16, 0}, {"w4g128", true, 4, 128}, {"w4g32", true, 4, 32},
                                 {"w8g128", true, 8, 128}};

k::PackedWeights make_weights(const Scheme& s, int64_t n, int64_t kk, std::vector<uint16_t>& f16, std::mt19937& rng) {
  if (!s.quant) {
    std::normal_distribution<float> nd(0.0f, 0.02f);
    f16.resize(size_t(n * kk));
    for (auto& v : f16) v = ptq::f32_to_fp16(nd(rng));
    return k::view_float_weights(k::WeightKind::F16, f16.data(), n, kk);
  }
  const int64_t groups = s.group == 0 ? 1 : kk / s.group;
  std::vector<uint8_t> q(size_t(n * kk));
  std::uniform_int_distribution<int> code(0, (1 << s.bits) - 1);
  for (auto& v : q) v = uint8_t(code(rng));
  std::vector<float> scales(size_t(n * groups), 0.01f);
  return k::pack_quantized(q.data(), n, kk, s.bits, groups, scales.data(), nullptr, nullptr, s.name);
}

std::vector<float> random_x(int64_t m, int64_t kk, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(m * kk));
  for (auto& v : x) v = nd(rng);
  return x;
}

void machine(const Options& o) {
  const double bw = k::measure_read_bandwidth();
  std::printf("{\"bench\":\"machine\",\"cpu_isa\":\"%s\",\"threads\":%d,\"cpu_read_bandwidth_gbs\":%.2f", k::isa_name(k::best_isa()),
              omp_get_max_threads(), bw);
  if (cu::device_count() > 0) {
    const cu::DeviceInfo d = cu::device_info(0);
    std::printf(",\"cuda_device\":\"%s\",\"sm\":%d,\"multiprocessors\":%d,\"memory_gib\":%.1f,\"peak_bandwidth_gbs\":%.1f",
                d.name.c_str(), d.sm, d.multiprocessors, double(d.memory_bytes) / (1 << 30), d.peak_bandwidth_gbs);
    const std::string why = cu::cublas_unavailable();
    if (why.empty())
      std::printf(",\"cublas\":\"%s\"", cu::cublas_library().c_str());
    else
      std::printf(",\"cublas\":null,\"cublas_unavailable\":\"%s\"", why.c_str());
  } else {
    std::printf(",\"cuda_device\":null,\"cuda_unavailable\":\"%s\"", cu::unavailable_reason().c_str());
  }
  std::printf("}\n");
}

void cpu_gemv(const Options& o) {
  std::mt19937 rng(1);
  const int64_t n = o.quick ? 256 : 4096, kk = o.quick ? 512 : 4096;
  const double bw = k::measure_read_bandwidth();
  for (const Scheme& s : kWeightSchemes) {
    std::vector<uint16_t> f16;
    const k::PackedWeights w = make_weights(s, n, kk, f16, rng);
    const std::vector<float> x = random_x(1, kk, rng);
    std::vector<float> y(static_cast<size_t>(n));
    const double sec = time_call([&] { k::linear(w, x.data(), 1, y.data()); }, [] {}, o.repeats, o.quick ? 3 : 20);
    const double gbs = double(w.bytes()) / sec / 1e9;
    std::printf("{\"bench\":\"cpu_gemv\",\"weights\":\"%s\",\"n\":%lld,\"k\":%lld,\"us\":%.1f,\"gbs\":%.2f,"
                "\"share_of_bandwidth\":%.3f}\n",
                s.name, (long long)n, (long long)kk, sec * 1e6, gbs, gbs / bw);
  }
}

// Weight integers of a module on a grid of `bits` (symmetric, per output channel), as int_linear8 takes them.
struct IntModuleHost {
  std::vector<int16_t> w;
  std::vector<float> s;
  k::IntWeights view;
};
IntModuleHost make_int_host(int64_t n, int64_t kk, int bits, std::mt19937& rng) {
  IntModuleHost h;
  const int qmax = (1 << (bits - 1)) - 1;
  std::uniform_int_distribution<int> code(-qmax - 1, qmax);
  h.w.resize(size_t(n * kk));
  for (auto& v : h.w) v = int16_t(code(rng));
  h.s.assign(size_t(n), 0.01f);
  h.view = k::IntWeights{h.w.data(), h.s.data(), n, kk, 1, qmax + 1};
  return h;
}

void cpu_act_module(const Options& o) {
  if (!k::has_avx512_vnni() || k::best_isa() != k::Isa::Avx512) {
    std::printf("{\"bench\":\"cpu_act_module\",\"skipped\":\"the byte kernels need AVX-512 VNNI\"}\n");
    return;
  }
  std::mt19937 rng(3);
  struct Shape {
    const char* module;
    int64_t n, k;
  };
  const Shape shapes[] = {{"q_proj", 2048, 2048}, {"gate_proj", 5632, 2048}, {"down_proj", 2048, 5632}};
  for (const Shape& sh : shapes)
    for (int bits : {4, 8}) {
      const int64_t n = o.quick ? 64 : sh.n, kk = o.quick ? 256 : sh.k;
      const IntModuleHost h = make_int_host(n, kk, bits, rng);
      const k::IntWeights8 w8 = k::pack_int_weights8(h.view);
      // A 16-row module of the same width: the same rounding pass and one row tile, a bound on the pass alone.
      const IntModuleHost h16 = make_int_host(16, kk, bits, rng);
      const k::IntWeights8 w16 = k::pack_int_weights8(h16.view);
      const int qmax = bits == 4 ? 7 : 127;
      for (int64_t m : {int64_t(1), int64_t(64)}) {
        const std::vector<float> x = random_x(m, kk, rng);
        std::vector<float> y(size_t(m * n));
        const float a = 3.0f / float(qmax);
        const int inner = o.quick ? 2 : (m == 1 ? 200 : 10);
        const double st = time_call([&] { k::int_linear8_static(w8, x.data(), m, 1.0f / a, a, -qmax - 1, qmax, y.data()); },
                                    [] {}, o.repeats, inner);
        const double dy = time_call([&] { k::int_linear8_dynamic(w8, x.data(), m, 1.0, qmax, y.data()); }, [] {},
                                    o.repeats, inner);
        const double pass = time_call(
            [&] { k::int_linear8_static(w16, x.data(), m, 1.0f / a, a, -qmax - 1, qmax, y.data()); }, [] {}, o.repeats,
            inner);
        std::printf("{\"bench\":\"cpu_act_module\",\"module\":\"%s\",\"n\":%lld,\"k\":%lld,\"weight_bits\":%d,"
                    "\"act_bits\":%d,\"tokens\":%lld,\"threads\":%d,\"static_us\":%.1f,\"dynamic_us\":%.1f,"
                    "\"dynamic_over_static\":%.3f,\"codes_pass_bound_us\":%.1f,\"codes_pass_share\":%.3f}\n",
                    sh.module, (long long)n, (long long)kk, bits, bits, (long long)m, omp_get_max_threads(), st * 1e6,
                    dy * 1e6, dy / st, pass * 1e6, pass / st);
      }
    }
}

// ---- CUDA ----------------------------------------------------------------------------------------------------

void cuda_gemv(const Options& o, const cu::DeviceInfo& dev) {
  std::mt19937 rng(2);
  const int64_t n = o.quick ? 256 : 11008, kk = o.quick ? 512 : 4096;
  for (const Scheme& s : kWeightSchemes) {
    std::vector<uint16_t> f16;
    const cu::DeviceWeights w = cu::upload(make_weights(s, n, kk, f16, rng));
    const std::vector<float> x = random_x(1, kk, rng);
    cu::Buffer dx = cu::to_device(x.data(), x.size()), dy(size_t(n) * sizeof(float));
    const double sec = time_call([&] { cu::linear(w, dx.as<float>(), 1, dy.as<float>()); }, cu::synchronize, o.repeats,
                                 o.quick ? 3 : 200);
    const double gbs = double(w.bytes()) / sec / 1e9;
    std::printf("{\"bench\":\"cuda_gemv\",\"weights\":\"%s\",\"n\":%lld,\"k\":%lld,\"us\":%.2f,\"gbs\":%.1f,"
                "\"share_of_peak_bandwidth\":%.3f}\n",
                s.name, (long long)n, (long long)kk, sec * 1e6, gbs, gbs / dev.peak_bandwidth_gbs);
  }
}

// make_int_host's weights, uploaded.
struct IntModule {
  IntModuleHost host;
  cu::DeviceIntWeights dw;
};

IntModule make_int_module(int64_t n, int64_t kk, int bits, std::mt19937& rng) {
  IntModule mod{make_int_host(n, kk, bits, rng), {}};
  mod.dw = cu::upload(mod.host.view);
  return mod;
}

// The seven linear modules of a decoder layer: q, k, v, o [h, h], gate, up [f, h], down [h, f].
std::vector<std::pair<int64_t, int64_t>> layer_shapes(const Options& o) {
  const int64_t h = o.quick ? 256 : 4096, f = o.quick ? 688 : 11008;
  return {{h, h}, {h, h}, {h, h}, {h, h}, {f, h}, {f, h}, {h, f}};
}

void cuda_layer_and_gemm(const Options& o) {
  std::mt19937 rng(3);
  const auto shapes = layer_shapes(o);
  int64_t max_k = 0, max_n = 0;
  for (auto [n, kk] : shapes) max_k = std::max(max_k, kk), max_n = std::max(max_n, n);
  const int64_t prefill = o.quick ? 64 : 512;
  const std::vector<int64_t> token_counts = {1, 16, prefill};
  cu::Buffer dx(size_t(prefill * max_k) * sizeof(float)), dy(size_t(prefill * max_n) * sizeof(float));
  {
    const std::vector<float> x = random_x(prefill, max_k, rng);
    dx.upload(x.data(), dx.bytes());
  }
  cu::Buffer dc(size_t(prefill * max_k)), da(size_t(prefill) * sizeof(float));
  {
    std::vector<int8_t> c(size_t(prefill * max_k));
    std::uniform_int_distribution<int> code(-127, 127);
    for (auto& v : c) v = int8_t(code(rng));
    dc.upload(c.data(), c.size());
    const std::vector<float> a(size_t(prefill), 0.05f);
    da.upload(a.data(), da.bytes());
  }
  std::vector<double> fp16_ms(token_counts.size(), 0.0);
  std::vector<std::string> fp16_gemm(token_counts.size());
  // One scheme's seven modules at every token count: a cuda_layer line each, and at the prefill count a cuda_gemm line
  // (`rate`: "tflops" for float activations, "tops" for integer ones; `gemm`: the kernel, where linear_kernel says it).
  // The FP16 baseline runs first (`base`).
  using Gemm = std::function<const char*(int64_t m)>;
  auto measure = [&](const char* scheme, const char* rate, const std::function<void(int64_t m)>& layer,
                     const Gemm& gemm, bool base) {
    for (size_t ti = 0; ti < token_counts.size(); ++ti) {
      const int64_t m = token_counts[ti];
      const double sec = time_call([&] { layer(m); }, cu::synchronize, o.repeats, o.quick ? 2 : 20);
      const std::string kernel = gemm ? std::string(",\"gemm\":\"") + gemm(m) + "\"" : "";
      if (base) fp16_ms[ti] = sec * 1e3, fp16_gemm[ti] = gemm(m);
      std::printf("{\"bench\":\"cuda_layer\",\"scheme\":\"%s\"%s,\"tokens\":%lld,\"ms\":%.3f,\"speedup_vs_fp16\":%.2f,"
                  "\"fp16_gemm\":\"%s\"}\n",
                  scheme, kernel.c_str(), (long long)m, sec * 1e3, fp16_ms[ti] / (sec * 1e3), fp16_gemm[ti].c_str());
      if (m != prefill) continue;
      double ops = 0;
      for (auto [n, kk] : shapes) ops += 2.0 * double(m) * double(n) * double(kk);
      std::printf("{\"bench\":\"cuda_gemm\",\"weights\":\"%s\"%s,\"tokens\":%lld,\"%s\":%.2f}\n", scheme,
                  kernel.c_str(), (long long)m, rate, ops / sec / 1e12);
    }
  };
  // Weight-only schemes (fp32 activations); FP16 on cuBLAS (the baseline) and on the own kernel.
  std::vector<cu::FloatGemm> fp16_gemms = {cu::FloatGemm::Own};
  if (cu::cublas_unavailable().empty()) fp16_gemms.insert(fp16_gemms.begin(), cu::FloatGemm::Cublas);
  for (const Scheme& s : {kWeightSchemes[0], kWeightSchemes[1], kWeightSchemes[3]}) {
    std::vector<cu::DeviceWeights> mods;
    for (auto [n, kk] : shapes) {
      std::vector<uint16_t> f16;
      mods.push_back(cu::upload(make_weights(s, n, kk, f16, rng)));
    }
    const auto layer = [&](int64_t m) {
      for (const auto& w : mods) cu::linear(w, dx.as<float>(), m, dy.as<float>());
    };
    const Gemm gemm = [&](int64_t m) { return cu::linear_kernel(mods.front(), m); };
    const std::vector<cu::FloatGemm> gemms = s.quant ? std::vector<cu::FloatGemm>{cu::FloatGemm::Auto} : fp16_gemms;
    for (cu::FloatGemm g : gemms) {
      cu::set_float_gemm(g);
      measure(s.name, "tflops", layer, gemm, !s.quant && g == gemms.front());
    }
    cu::set_float_gemm(cu::FloatGemm::Auto);
  }
  // Integer activations: W8A8, and 4-bit weights with 8- or 4-bit codes (held as bytes on the device, so W4A8 and
  // W4A4 run the W8A8 kernel on smaller integers).
  for (auto [name, bits] : {std::pair<const char*, int>{"w8a8", 8}, {"w4a8", 4}, {"w4a4", 4}}) {
    std::vector<IntModule> mods;
    for (auto [n, kk] : shapes) mods.push_back(make_int_module(n, kk, bits, rng));
    measure(name, "tops", [&](int64_t m) {
      for (const auto& mod : mods) cu::int_linear(mod.dw, dc.as<int8_t>(), da.as<float>(), m, true, dy.as<float>());
    }, nullptr, false);
  }
}

// GPTQ's device solve on a 7B layer's shapes: the Hessian's xᵀx per 2048 calibration tokens, the damped factor for
// each input width, and the sweep (blocks + lazy updates) per module shape; one cuda_gptq line each, then a
// cuda_gptq_layer line: a decoder layer's solve (q/k/v share a Hessian, gate/up another, o and down their own).
// With `ops` the host emulation (--gptq-host-emulation, the smoke test's check that this code runs) the times are the
// emulation's, labelled so.
void cuda_gptq(const Options& o, const std::unique_ptr<k::GptqOps>& ops) {
  std::mt19937 rng(4);
  const int64_t h = o.quick ? 256 : 4096, f = o.quick ? 688 : 11008, tokens = o.quick ? 256 : 2048;
  auto on = [&](const std::vector<float>& v) {
    std::shared_ptr<void> p = ops->alloc(v.size() * sizeof(float));
    ops->to_device(p.get(), v.data(), v.size() * sizeof(float));
    return p;
  };
  const bool device = std::strcmp(ops->name(), "cuda") == 0;
  auto seconds = [&](const std::function<void()>& call) {
    return time_call(call, device ? std::function<void()>(cu::synchronize) : [] {}, 1, 1);
  };
  std::map<int64_t, std::shared_ptr<void>> u_of;  // input width -> U
  std::map<int64_t, double> factor_ms;
  for (int64_t in : {h, f}) {
    const std::shared_ptr<void> x = on(random_x(tokens, in, rng)), hess = ops->alloc(size_t(in * in) * sizeof(float)),
                                work = ops->alloc(size_t(2 * in * in) * sizeof(double));
    const float* xd = static_cast<const float*>(x.get());
    const double hess_s = seconds([&] {
      ops->gemm_at_b(in, in, tokens, 2.0f / float(tokens), xd, in, xd, in, 0.0f, static_cast<float*>(hess.get()), in);
    });
    std::shared_ptr<void> u = ops->alloc(size_t(in * in) * sizeof(float));
    bool ok = false;
    factor_ms[in] = 1e3 * seconds([&] {
      // percdamp 0.01 of mean(diag H) = 2 E[x²] = 2 for these unit-variance inputs.
      ok = ops->inverse_cholesky_upper(static_cast<const float*>(hess.get()), in, 0.01 * 2.0,
                                       static_cast<double*>(work.get()), static_cast<float*>(u.get()));
    });
    if (!ok) throw std::runtime_error("cuda_gptq: the damped Hessian was not positive definite");
    u_of[in] = u;
    std::printf("{\"bench\":\"cuda_gptq\",\"ops\":\"%s\",\"step\":\"hessian+factor\",\"in\":%lld,\"tokens\":%lld,"
                "\"hessian_ms\":%.3f,\"hessian_tflops\":%.2f,\"factor_ms\":%.1f}\n",
                ops->name(), (long long)in, (long long)tokens, hess_s * 1e3, 2.0 * double(tokens) * double(in * in) / hess_s / 1e12,
                factor_ms[in]);
  }
  std::map<std::pair<int64_t, int64_t>, double> sweep_ms;  // (in, out)
  for (auto [in, out] : {std::pair{h, h}, std::pair{h, f}, std::pair{f, h}}) {
    const int64_t width = o.quick ? 16 : 128, groups = in / width;  // 688 = 43 x 16
    k::GptqSweepBuffers b = k::alloc_gptq_sweep(*ops, in, out, groups);
    k::GptqSweep& v = b.view;
    const std::vector<float> w = random_x(in, out, rng);
    ops->to_device(v.wt, w.data(), w.size() * sizeof(float));
    std::vector<int32_t> column_group(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) column_group[i] = int32_t(i / width);
    ops->to_device(b.column_group.get(), column_group.data(), column_group.size() * sizeof(int32_t));
    v.u = static_cast<const float*>(u_of[in].get());
    v.width = width;
    v.bits = 4;
    const double s = seconds([&] { k::gptq_sweep(*ops, v); });
    sweep_ms[{in, out}] = s * 1e3;
    std::printf("{\"bench\":\"cuda_gptq\",\"ops\":\"%s\",\"step\":\"sweep\",\"in\":%lld,\"out\":%lld,\"grid\":\"%s\","
                "\"sweep_ms\":%.1f}\n", ops->name(), (long long)in, (long long)out, o.quick ? "w4g16" : "w4g128", s * 1e3);
  }
  const double layer_ms = 3 * factor_ms[h] + factor_ms[f] + 4 * sweep_ms[{h, h}] + 2 * sweep_ms[{h, f}] + sweep_ms[{f, h}];
  std::printf("{\"bench\":\"cuda_gptq_layer\",\"ops\":\"%s\",\"hidden\":%lld,\"ffn\":%lld,\"solve_ms\":%.1f,"
              "\"solve_s_32_layers\":%.1f}\n", ops->name(), (long long)h, (long long)f, layer_ms, 32 * layer_ms / 1e3);
}

int cuda_check() {
  if (cu::device_count() == 0) {
    std::printf("%s\n", cu::unavailable_reason().c_str());
    return 77;
  }
  const cu::DeviceInfo d = cu::device_info(0);
  const std::string why = cu::cublas_unavailable();
  const std::string gemm = why.empty() ? "cuBLAS (" + cu::cublas_library() + ")"
                                       : "ptq's own hmma kernel (cuBLAS unavailable: " + why + ")";
  std::printf("%s (sm_%d, %d SMs, %.1f GiB); FP16/BF16 GEMM: %s\n", d.name.c_str(), d.sm, d.multiprocessors,
              double(d.memory_bytes) / (1 << 30), gemm.c_str());
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: ptq_kernel_bench --cuda-check\n"
               "       ptq_kernel_bench [--quick] [--cpu-only] [--repeats N]\n"
               "       ptq_kernel_bench --quick --gptq-host-emulation   (cuda_gptq on the CPU emulation: checks it runs)\n"
               "JSON lines on stdout: machine, cpu_gemv, cpu_act_module, and where a CUDA device is present cuda_gemv, cuda_gemm,\n"
               "cuda_layer, cuda_gptq, cuda_gptq_layer (see apps/kernel_bench.cpp).\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cuda-check" && argc == 2) return cuda_check();
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--gptq-host-emulation") {
      o.gptq_host_emulation = true;
    } else if (a == "--cpu-only") {
      o.cpu_only = true;
    } else if (a == "--repeats" && i + 1 < argc) {
      o.repeats = std::max(1, std::atoi(argv[++i]));
    } else {
      return usage();
    }
  }
  try {
    if (o.gptq_host_emulation) {
      if (!o.quick) return usage();
      cuda_gptq(o, k::cuda_gptq_host_emulation());
      return 0;
    }
    machine(o);
    cpu_gemv(o);
    cpu_act_module(o);
    if (!o.cpu_only && cu::device_count() > 0) {
      const cu::DeviceInfo dev = cu::device_info(0);
      cuda_gemv(o, dev);
      cuda_layer_and_gemm(o);
      cuda_gptq(o, k::cuda_gptq_ops());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptq_kernel_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
