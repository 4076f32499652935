// Compares the tensors of two GGUF files (metadata aside): for every tensor of A, B must hold one of the same name,
// ggml type, shape and bytes. Headers are read by @huggingface/gguf (an independent parser), the data sections
// directly. A mismatch names the tensor and, for equal types, its first differing block (row, block in the row).
// Usage: node gguf_compare.mjs A.gguf B.gguf
// Prints one JSON line {"tensors", "identical", "bytes_a", "bytes_b", "types": {name: type}, "mismatches": [...]};
// exit 0 when every tensor is identical, 1 otherwise.
import {readFileSync, statSync} from "node:fs";
import {gguf} from "@huggingface/gguf";

// ggml type id -> [name, elements per block, bytes per block] (ggml.c's type_traits) for the types ptq writes.
const TYPES = {
  0: ["f32", 1, 4], 1: ["f16", 1, 2], 30: ["bf16", 1, 2], 2: ["q4_0", 32, 18], 3: ["q4_1", 32, 20],
  6: ["q5_0", 32, 22], 7: ["q5_1", 32, 24], 8: ["q8_0", 32, 34], 10: ["q2_k", 256, 84], 11: ["q3_k", 256, 110],
  12: ["q4_k", 256, 144], 13: ["q5_k", 256, 176], 14: ["q6_k", 256, 210],
};

async function load(path) {
  const {tensorInfos, tensorDataOffset} = await gguf(path, {allowLocalFile: true});
  const bytes = readFileSync(path);
  const tensors = new Map();
  for (const t of tensorInfos) {
    const type = TYPES[t.dtype];
    if (!type) throw new Error(`${path}: tensor ${t.name} has ggml type ${t.dtype}, unknown to this comparer`);
    const shape = t.shape.map(Number);
    const n = shape.reduce((a, b) => a * b, 1);
    const start = Number(tensorDataOffset) + Number(t.offset);
    const size = (n / type[1]) * type[2];
    tensors.set(t.name, {type, shape, data: bytes.subarray(start, start + size)});
  }
  return {tensors, size: statSync(path).size};
}

const [pathA, pathB] = process.argv.slice(2);
const [a, b] = await Promise.all([load(pathA), load(pathB)]);
const mismatches = [];
const types = {};
let identical = 0;
for (const [name, ta] of a.tensors) {
  types[name] = ta.type[0];
  const tb = b.tensors.get(name);
  if (!tb) {
    mismatches.push({name, why: "missing in B"});
    continue;
  }
  if (ta.type[0] !== tb.type[0] || ta.shape.join() !== tb.shape.join()) {
    mismatches.push({name, why: "type/shape", a: `${ta.type[0]} [${ta.shape}]`, b: `${tb.type[0]} [${tb.shape}]`});
    continue;
  }
  if (Buffer.compare(ta.data, tb.data) === 0) {
    identical++;
    continue;
  }
  let i = 0;
  while (ta.data[i] === tb.data[i]) i++;
  const block = Math.floor(i / ta.type[2]);
  const perRow = ta.shape[0] / ta.type[1];
  let blocksDiffering = 0;
  for (let k = 0; k < ta.data.length; k += ta.type[2])
    if (Buffer.compare(ta.data.subarray(k, k + ta.type[2]), tb.data.subarray(k, k + ta.type[2])) !== 0) blocksDiffering++;
  mismatches.push({name, why: "bytes", type: ta.type[0], first_byte: i, row: Math.floor(block / perRow),
                   block_in_row: block % perRow, blocks_differing: blocksDiffering, blocks: ta.data.length / ta.type[2]});
}
for (const name of b.tensors.keys()) if (!a.tensors.has(name)) mismatches.push({name, why: "missing in A"});
process.stdout.write(JSON.stringify({tensors: a.tensors.size, identical, bytes_a: a.size, bytes_b: b.size, types,
                                     mismatches}) + "\n");
process.exit(mismatches.length === 0 ? 0 : 1);
