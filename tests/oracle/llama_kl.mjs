// Mean KL(p_FP || p_Q) per predicted token and both perplexities, measured by llama.cpp (node-llama-cpp) on the
// token windows llama_ppl.mjs scores (same settings: one thread, no flash attention, F32 KV cache).
// Usage: node llama_kl.mjs FP.gguf Q.gguf IDS.json SEQLEN MAX_WINDOWS   (IDS.json: `ptq tokenize --json`)
// Prints one JSON line {"mean_kl", "ppl_q", "ppl_fp", "windows", "predicted"}.
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const [fpPath, qPath, idsPath, seqlenArg, wArg] = process.argv.slice(2);
const ids = JSON.parse(readFileSync(idsPath, "utf8")).ids;
const seqlen = Number(seqlenArg), windows = Math.min(Number(wArg), Math.floor(ids.length / seqlen));
const llama = await getLlama({build: "never", gpu: false, logLevel: "error"});
async function open(p) {
  const model = await llama.loadModel({modelPath: p});
  const ctx = await model.createContext({contextSize: seqlen, batchSize: seqlen, threads: 1, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
  return {model, seq: ctx.getSequence(), vocab: model.tokens.count ?? model.fileInfo.metadata.tokenizer.ggml.tokens.length};
}
const fp = await open(fpPath), q = await open(qPath);
const V = fp.vocab;
async function logp(m, win) {
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
let kl = 0, nllq = 0, nllf = 0, n = 0;
for (let w = 0; w < windows; ++w) {
  const win = ids.slice(w * seqlen, (w + 1) * seqlen);
  const a = await logp(fp, win), b = await logp(q, win);
  for (let i = 0; i < a.length; ++i) {
    let k = 0; for (let v = 0; v < V; ++v) k += Math.exp(a[i][v]) * (a[i][v] - b[i][v]);
    kl += k; nllq -= b[i][win[i + 1]]; nllf -= a[i][win[i + 1]]; ++n;
  }
}
console.log(JSON.stringify({mean_kl: kl / n, ppl_q: Math.exp(nllq / n), ppl_fp: Math.exp(nllf / n), windows, predicted: n}));
process.exit(0);
