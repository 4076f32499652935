// Mean KL(p_FP || p_Q) per predicted token and perplexity of one or more quantized GGUF files against one FP GGUF,
// measured by llama.cpp (node-llama-cpp: one thread, no flash attention, F32 KV cache, ptq's token ids cut into
// non-overlapping windows of SEQLEN tokens, as llama_ppl.mjs scores), the FP model evaluated once per window for all
// the quantized files (scripts/gguf_table.sh scores ~20 files per model).
// Runs from the directory holding node_modules (ESM imports resolve next to the script): npm_oracle_scripts copies it.
// Usage: node gguf_kl.mjs FP.gguf IDS.json SEQLEN MAX_WINDOWS Q.gguf...   (IDS.json: `ptq tokenize --json`)
// Prints one JSON line per Q.gguf, in order: {"file", "mean_kl", "ppl_q", "ppl_fp", "windows", "predicted"}.
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const [fpPath, idsPath, seqlenArg, wArg, ...qPaths] = process.argv.slice(2);
const ids = JSON.parse(readFileSync(idsPath, "utf8")).ids;
const seqlen = Number(seqlenArg), windows = Math.min(Number(wArg), Math.floor(ids.length / seqlen));
const llama = await getLlama({build: "never", gpu: false, logLevel: "error"});
async function open(p) {
  const model = await llama.loadModel({modelPath: p});
  const ctx = await model.createContext({contextSize: seqlen, batchSize: seqlen, threads: 1, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
  return {model, ctx, seq: ctx.getSequence(),
          vocab: model.tokens.count ?? model.fileInfo.metadata.tokenizer.ggml.tokens.length};
}
const fp = await open(fpPath);
const qs = [];
for (const p of qPaths) qs.push(await open(p));  // all loaded at once: small models
const V = fp.vocab;
async function logp(m, win) {  // log-softmax rows for positions 0..seqlen-2
  await m.seq.clearHistory();
  const out = await m.seq.controlledEvaluate(win.map((t, i) => (i + 1 < seqlen ? [t, {generateNext: {logits: true}}] : t)));
  return out.slice(0, seqlen - 1).map((o) => {
    const row = new Float64Array(V);
    for (const [tok, v] of o.next.logits) row[tok] = v;
    let mx = -Infinity; for (const v of row) mx = Math.max(mx, v);
    let s = 0; for (const v of row) s += Math.exp(v - mx);
    const l = Math.log(s) + mx;
    return row.map((v) => v - l);
  });
}
const acc = qPaths.map(() => ({kl: 0, nll: 0}));
let nllf = 0, n = 0;
for (let w = 0; w < windows; ++w) {
  const win = ids.slice(w * seqlen, (w + 1) * seqlen);
  const a = await logp(fp, win);
  const pa = a.map((r) => r.map(Math.exp));
  for (let i = 0; i < a.length; ++i) { nllf -= a[i][win[i + 1]]; ++n; }
  for (let j = 0; j < qPaths.length; ++j) {
    const b = await logp(qs[j], win);
    for (let i = 0; i < a.length; ++i) {
      let k = 0; for (let v = 0; v < V; ++v) k += pa[i][v] * (a[i][v] - b[i][v]);
      acc[j].kl += k; acc[j].nll -= b[i][win[i + 1]];
    }
  }
}
for (let j = 0; j < qPaths.length; ++j) {
  console.log(JSON.stringify({file: qPaths[j], mean_kl: acc[j].kl / n, ppl_q: Math.exp(acc[j].nll / n),
                              ppl_fp: Math.exp(nllf / n), windows, predicted: n}));
}
process.exit(0);
