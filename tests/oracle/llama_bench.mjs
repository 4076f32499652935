// llama.cpp's CPU throughput on a GGUF file (node-llama-cpp's prebuilt CPU binary), measured like `ptq bench`:
// PROMPT seeded random token ids (within the vocabulary, special ids 0-2 avoided) evaluated as one batch (prefill),
// then GEN greedy tokens; the first comes from the prefill logits, each further one costs one single-token decode
// step, so decode tok/s = (GEN - 1) / the time of those steps and prefill tok/s = PROMPT / the time to the first
// token. One untimed warm-up run first (weights paged in, compute buffers allocated), then the best of REPEATS runs,
// each from an empty KV cache. A benchmark, not a test (scripts/bench_runtime.sh runs it next to `ptq bench`).
// Usage: node llama_bench.mjs MODEL.gguf PROMPT GEN THREADS [REPEATS]   (REPEATS default: $LLAMA_BENCH_REPEATS or 2)
//        node llama_bench.mjs --baseline [THREADS]   (node + the llama.cpp binding loaded, no model: its RSS)
// Prints one JSON line {"runtime": "llama.cpp", "prefill_tok_s", "decode_tok_s", "peak_rss_mb", ...}; peak_rss_mb is
// this process's own maximum resident set (process.resourceUsage().maxRSS), node's own baseline included.
// Settings: no GPU, no build, mmap'd weights, F16 KV cache (llama.cpp's default), flash attention off, batchSize =
// PROMPT (one ubatch: the whole prompt in one llama_decode), THREADS threads for both prefill and decode (the Llama
// instance's maxThreads is 0, so the context's thread count is used as is, not capped by node-llama-cpp's splitter).
import {performance} from "node:perf_hooks";
import {getLlama} from "node-llama-cpp";

const usage = "usage: node llama_bench.mjs MODEL.gguf PROMPT GEN THREADS [REPEATS] | --baseline [THREADS]";
const args = process.argv.slice(2);
const peakRssMb = () => process.resourceUsage().maxRSS / 1024;  // maxRSS is in KiB
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

if (args[0] === "--baseline") {
  const llama = await getLlama({build: "never", gpu: false, logLevel: "error", maxThreads: 0});
  process.stdout.write(JSON.stringify({runtime: "llama.cpp", baseline: true, peak_rss_mb: round(peakRssMb(), 1),
                                       node: process.version}) + "\n");
  await llama.dispose();
  process.exit(0);
}

const [modelPath, promptArg, genArg, threadsArg, repeatsArg] = args;
const promptTokens = Number(promptArg), genTokens = Number(genArg), threads = Number(threadsArg);
const repeats = Number(repeatsArg ?? process.env.LLAMA_BENCH_REPEATS ?? 2);
for (const [name, v] of [["PROMPT", promptTokens], ["GEN", genTokens], ["THREADS", threads], ["REPEATS", repeats]]) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`${usage}\n${name} must be a positive integer, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
}
if (!modelPath) {
  console.error(usage);
  process.exit(2);
}

// GGML types of the tensors ptq writes (ggml.h numbering): [name, bytes per block, values per block].
const ggmlTypes = {0: ["F32", 4, 1], 1: ["F16", 2, 1], 2: ["Q4_0", 18, 32], 3: ["Q4_1", 20, 32], 8: ["Q8_0", 34, 32],
                   30: ["BF16", 2, 1]};
const tensorElements = (t) => t.dimensions.reduce((a, d) => a * Number(d), 1);

// mulberry32: a small seeded generator, so every run (and every repeat) feeds the same prompt.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const llama = await getLlama({build: "never", gpu: false, logLevel: "error", maxThreads: 0});
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true, ignoreMemorySafetyChecks: true});
const context = await model.createContext({
  contextSize: promptTokens + genTokens,  // llama.cpp may pad it (context_size below is what it made)
  batchSize: promptTokens,
  sequences: 1,
  threads,
  flashAttention: false,
  experimentalKvCacheKeyType: "F16",
  experimentalKvCacheValueType: "F16",
  ignoreMemorySafetyChecks: true,
});
const meta = model.fileInfo.metadata;
const arch = meta.general.architecture;
const vocab = model.tokens.count ?? meta.tokenizer.ggml.tokens.length;
if (vocab <= 3) throw new Error(`vocabulary of ${vocab} tokens: no room for non-special prompt ids`);
const next = rng(Number(process.env.LLAMA_BENCH_SEED ?? 0));
const prompt = Array.from({length: promptTokens}, () => 3 + Math.floor(next() * (vocab - 3)));
const seq = context.getSequence();

// One run: returns [prefill seconds, decode seconds, decode steps]. evaluate() is node-llama-cpp's generation loop:
// the prompt goes in as one batch, and each later next() feeds the previously sampled token back (one llama_decode
// of one token) and samples greedily (temperature 0) in native code. yieldEogToken keeps it from stopping at EOS.
async function run(gen) {
  await seq.clearHistory();
  const it = seq.evaluate(prompt, {temperature: 0, yieldEogToken: true});
  const t0 = performance.now();
  let r = await it.next();
  const t1 = performance.now();
  let steps = 0;
  while (!r.done && steps + 1 < gen) {
    r = await it.next();
    if (!r.done) ++steps;
  }
  const t2 = performance.now();
  await it.return();
  if (steps + 1 < gen) throw new Error(`generation stopped after ${steps + 1} of ${gen} tokens`);
  return [(t1 - t0) / 1e3, (t2 - t1) / 1e3, steps];
}

await run(Math.min(genTokens, 3));  // warm-up
let prefill = 0, decode = 0;
for (let i = 0; i < repeats; ++i) {
  const [ps, ds, steps] = await run(genTokens);
  prefill = Math.max(prefill, promptTokens / ps);
  if (steps > 0) decode = Math.max(decode, steps / ds);
}

// Bytes one decode step reads: every tensor but token_embd (one row of it per token; when the output projection is
// tied to it, llama.cpp reads it whole as the output, so it counts then).
const tensors = model.fileInfo.tensorInfo ?? [];
const tied = !tensors.some((t) => t.name === "output.weight");
let weightBytes = 0;
const byType = {};
for (const t of tensors) {
  const [typeName, blockBytes, blockValues] = ggmlTypes[t.ggmlType] ?? [`type${t.ggmlType}`, NaN, 1];
  const b = (tensorElements(t) / blockValues) * blockBytes;
  byType[typeName] = (byType[typeName] ?? 0) + b;
  if (t.name !== "token_embd.weight" || tied) weightBytes += b;
}
if (!Number.isFinite(weightBytes) || tensors.length === 0) weightBytes = null;  // a type not in the table
const layers = meta[arch]?.block_count, heads = meta[arch]?.attention?.head_count;
const kvHeads = meta[arch]?.attention?.head_count_kv ?? heads, hidden = meta[arch]?.embedding_length;
const kvBytes = layers && heads && hidden ? context.contextSize * layers * 2 * kvHeads * (hidden / heads) * 2 : null;

process.stdout.write(JSON.stringify({
  runtime: "llama.cpp",
  model: modelPath,
  prompt_tokens: promptTokens,
  gen_tokens: genTokens,
  decode_steps: genTokens - 1,  // timed single-token steps per run; decode_tok_s = decode_steps / their seconds
  repeats,
  threads: context.currentThreads,
  prefill_tok_s: round(prefill),
  decode_tok_s: round(decode),
  peak_rss_mb: round(peakRssMb(), 1),
  weight_bytes: weightBytes,  // read per decoded token (see above)
  tensor_bytes_by_type: byType,
  kv_cache: "f16",
  context_size: context.contextSize,
  kv_cache_bytes: kvBytes,
  flash_attention: false,
  mmap: model.useMmap,
  node_llama_cpp: "3.22.1",
}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
