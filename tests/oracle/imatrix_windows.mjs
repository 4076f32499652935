// The token windows llama-imatrix and `ptq calibrate` can both be made to see, built from one text (for
// scripts/check_imatrix_llama_cpp.sh). llama-imatrix tokenizes its whole text (BOS first), cuts it into consecutive
// chunks of n_ctx tokens and overwrites each chunk's first token with BOS (tools/imatrix/imatrix.cpp,
// compute_imatrix); ptq calibrate draws windows at random offsets, but a text of exactly seqlen tokens (BOS included)
// leaves it one window: the whole text. So from a text flattened to single-space-separated words (SentencePiece's
// pieces never cross a space, and every word starts a "▁" piece), pick K runs of n_ctx whole-word tokens whose last
// word is one token; llama.txt joins them with spaces: its BOS shifts run k to tokens [256k + 1, 256k + 257), so
// chunk k is BOS (over run k-1's last token) + run k minus its last token; chunk_k.txt holds run k without its last
// word (ptq: BOS + the same n_ctx - 1 tokens). llama.cpp's own tokenizer (node-llama-cpp) must give llama.txt the
// runs' ids; exit 1 when it does not.
// Usage: node imatrix_windows.mjs MODEL.gguf FLAT.txt IDS.json K N_CTX OUT_DIR
//   IDS.json: `ptq tokenize MODEL --file FLAT.txt --no-special --json`. Prints {"chunks", "n_ctx", "tokens"}.
import {gguf} from "@huggingface/gguf";
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";

const [modelPath, flatPath, idsPath, kArg, ctxArg, outDir] = process.argv.slice(2);
const K = Number(kArg), nCtx = Number(ctxArg);
const {metadata} = await gguf(modelPath, {allowLocalFile: true});
const pieces = metadata["tokenizer.ggml.tokens"];
const words = fs.readFileSync(flatPath, "utf8").split(" ");
const ids = JSON.parse(fs.readFileSync(idsPath, "utf8")).ids;
const starts = [];  // token index of each word's first token
ids.forEach((id, i) => { if (pieces[id].startsWith("\u2581")) starts.push(i); });
if (starts.length !== words.length || starts[0] !== 0) {
  console.error(`imatrix_windows: ${words.length} words but ${starts.length} word-initial tokens in ${flatPath}`);
  process.exit(1);
}
const wordAt = new Map(starts.map((t, w) => [t, w]));
wordAt.set(ids.length, words.length);
const llama = [], runIds = [];
let w = 0;
while (llama.length < K && w < words.length) {
  const a = starts[w], end = wordAt.get(a + nCtx);
  if (end !== undefined && starts[end - 1] === a + nCtx - 1) {
    fs.writeFileSync(`${outDir}/chunk_${llama.length}.txt`, words.slice(w, end - 1).join(" "));
    llama.push(words.slice(w, end).join(" "));
    runIds.push(...ids.slice(a, a + nCtx));
    w = end;
  } else {
    ++w;
  }
}
if (llama.length < K) {
  console.error(`imatrix_windows: only ${llama.length} of ${K} windows of ${nCtx} whole-word tokens in ${flatPath}`);
  process.exit(1);
}
fs.writeFileSync(`${outDir}/llama.txt`, llama.join(" "));
const runtime = await getLlama({build: "never", gpu: false, logLevel: "error"});
const model = await runtime.loadModel({modelPath});
const got = Array.from(model.tokenize(llama.join(" ")));  // no BOS: llama-imatrix adds it
const bad = runIds.findIndex((id, i) => got[i] !== id);
if (got.length !== runIds.length || bad >= 0) {
  console.error(`imatrix_windows: llama.cpp tokenizes ${outDir}/llama.txt to ${got.length} tokens, ptq to ` +
                `${runIds.length}; first difference at token ${bad}`);
  process.exit(1);
}
console.log(JSON.stringify({chunks: K, n_ctx: nCtx, tokens: K * nCtx}));
