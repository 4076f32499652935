// llama.cpp (through node-llama-cpp's prebuilt CPU binary) as an independent runtime: prints the raw logits of a
// token sequence as JSON {"ids": [...], "logits": [[vocab floats] per position]}.
// Usage: node llama_logits.mjs MODEL.gguf ID,ID,...
// Settings from issue 7: no GPU, no build, flash attention off, F32 KV cache (llama.cpp's defaults, flash attention
// and an F16 cache, add ~1e-2 logit error on their own).
import {getLlama} from "node-llama-cpp";

const [modelPath, idsArg] = process.argv.slice(2);
if (!modelPath || !idsArg) {
  console.error("usage: node llama_logits.mjs MODEL.gguf ID,ID,...");
  process.exit(2);
}
const ids = idsArg.split(",").map(Number);
const llama = await getLlama({build: "never", gpu: false, logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
  contextSize: Math.max(ids.length + 8, 64),
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
});
const vocab = model.tokens.count ?? model.fileInfo.metadata.tokenizer.ggml.tokens.length;
const seq = context.getSequence();
const out = await seq.controlledEvaluate(ids.map((t) => [t, {generateNext: {logits: true}}]));
const logits = out.map((item, i) => {
  if (!item?.next?.logits) throw new Error(`no logits for position ${i}`);
  const row = new Array(vocab).fill(null);
  for (const [tok, v] of item.next.logits) row[tok] = v;
  if (row.some((v) => v === null)) throw new Error(`position ${i}: logits do not cover the ${vocab}-token vocabulary`);
  return row;
});
process.stdout.write(JSON.stringify({ids, logits}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
