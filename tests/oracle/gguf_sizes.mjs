// Parameters and tensor data bytes of GGUF files (headers read by @huggingface/gguf), for bits/weight = 8 x tensor
// bytes / parameters, as llama.cpp counts BPW (metadata and tokenizer not included). Used by scripts/gguf_table.sh,
// which copies it next to node_modules (npm_oracle_scripts).
// Usage: node gguf_sizes.mjs FILE.gguf...   Prints one JSON line per file: {"file", "parameters", "tensor_bytes", "types"}.
import {gguf} from "@huggingface/gguf";

// ggml type id -> [name, elements per block, bytes per block] (ggml.c's type_traits), as tests/oracle/gguf_compare.mjs.
const TYPES = {
  0: ["f32", 1, 4], 1: ["f16", 1, 2], 30: ["bf16", 1, 2], 2: ["q4_0", 32, 18], 3: ["q4_1", 32, 20],
  6: ["q5_0", 32, 22], 7: ["q5_1", 32, 24], 8: ["q8_0", 32, 34], 10: ["q2_k", 256, 84], 11: ["q3_k", 256, 110],
  12: ["q4_k", 256, 144], 13: ["q5_k", 256, 176], 14: ["q6_k", 256, 210],
};
for (const file of process.argv.slice(2)) {
  const {tensorInfos} = await gguf(file, {allowLocalFile: true});
  let parameters = 0, bytes = 0;
  const types = {};
  for (const t of tensorInfos) {
    const type = TYPES[t.dtype];
    if (!type) throw new Error(`${file}: tensor ${t.name} has ggml type ${t.dtype}, unknown here`);
    const n = t.shape.map(Number).reduce((a, b) => a * b, 1);
    parameters += n; bytes += (n / type[1]) * type[2];
    types[type[0]] = (types[type[0]] || 0) + 1;
  }
  console.log(JSON.stringify({file, parameters, tensor_bytes: bytes, types}));
}
