// Perplexity measured by llama.cpp itself (node-llama-cpp's prebuilt CPU binary), on exactly the token windows
// `ptq eval ppl` scores (docs/EVAL.md): the ids come from ptq's tokenizer (`ptq tokenize --json`), cut
// into non-overlapping windows of SEQLEN (remainder dropped, at most MAX_WINDOWS), each window evaluated from an
// empty KV cache; every next-token prediction inside a window is scored from llama.cpp's raw logits
// (log-softmax in double here), ppl = exp(Σ NLL / Σ predicted tokens).
// Usage: node llama_ppl.mjs MODEL.gguf IDS.json SEQLEN [MAX_WINDOWS]
// Prints one JSON line {"ppl", "nll", "windows", "seqlen", "predicted"}.
// Settings as llama_logits.mjs (issue 7): no GPU, no build, flash attention off, F32 KV cache.
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const [modelPath, idsPath, seqlenArg, maxWindowsArg] = process.argv.slice(2);
if (!modelPath || !idsPath || !seqlenArg) {
  console.error("usage: node llama_ppl.mjs MODEL.gguf IDS.json SEQLEN [MAX_WINDOWS]");
  process.exit(2);
}
const ids = JSON.parse(readFileSync(idsPath, "utf8")).ids;
const seqlen = Number(seqlenArg);
let windows = Math.floor(ids.length / seqlen);
if (maxWindowsArg !== undefined && Number(maxWindowsArg) > 0) windows = Math.min(windows, Number(maxWindowsArg));
if (!(seqlen >= 2) || windows < 1) {
  console.error(`need at least one window of ${seqlen} tokens; the text has ${ids.length}`);
  process.exit(2);
}

const llama = await getLlama({build: "never", gpu: false, logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
  contextSize: seqlen,
  batchSize: seqlen,
  // One thread: ggml's worker threads spin between ops, which on a shared 2-core machine made a 256-token window of
  // the 8M model take 5 s instead of 0.1 s. The models here are tiny; one thread is the fast choice anyway.
  threads: 1,
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
});
const vocab = model.tokens.count ?? model.fileInfo.metadata.tokenizer.ggml.tokens.length;
const seq = context.getSequence();
let nll = 0;
const row = new Float64Array(vocab);
for (let w = 0; w < windows; ++w) {
  await seq.clearHistory();
  const win = ids.slice(w * seqlen, (w + 1) * seqlen);
  // Logits are needed for every position but the last (it predicts a token outside the window).
  const out = await seq.controlledEvaluate(
    win.map((t, i) => (i + 1 < seqlen ? [t, {generateNext: {logits: true}}] : t)));
  for (let i = 0; i + 1 < seqlen; ++i) {
    const logits = out[i]?.next?.logits;
    if (!logits) throw new Error(`window ${w} position ${i}: no logits`);
    row.fill(NaN);
    for (const [tok, v] of logits) row[tok] = v;
    let max = -Infinity;
    for (let v = 0; v < vocab; ++v) {
      if (Number.isNaN(row[v])) throw new Error(`window ${w} position ${i}: logits do not cover token ${v}`);
      max = Math.max(max, row[v]);
    }
    let sum = 0;
    for (let v = 0; v < vocab; ++v) sum += Math.exp(row[v] - max);
    nll -= row[win[i + 1]] - max - Math.log(sum);
  }
}
const predicted = windows * (seqlen - 1);
process.stdout.write(JSON.stringify({ppl: Math.exp(nll / predicted), nll: nll / predicted, windows, seqlen, predicted}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
