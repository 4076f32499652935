// Compares llama.cpp importance matrices (GGUF imatrix files, tools/imatrix/imatrix.cpp's save_imatrix): REF
// (llama-imatrix's) and TEST (ptq export --format imatrix; a comma-separated list is summed as llama-imatrix
// --in-file merges: in_sum2 and counts added, chunk counts too). Same entries, the same in_sum2/counts shapes in every
// file, same counts, and per column the mean square activation in_sum2 / counts within TOL relative to REF (columns
// under 1e-6 of the tensor's largest mean square are compared against that floor instead). Headers are read by
// @huggingface/gguf, the F32 data directly.
// Usage: node imatrix_compare.mjs REF.gguf TEST.gguf[,TEST2.gguf...] TOL
// Prints a line per tensor kind (attn_q, ..., ffn_down: max and median relative difference over its layers), then
// one JSON line {"entries", "max_rel", "median_rel", "problems", "pass"}; exit 0 on pass, 1 otherwise.
import {readFileSync} from "node:fs";
import {gguf} from "@huggingface/gguf";

async function load(path) {
  const {metadata, tensorInfos, tensorDataOffset} = await gguf(path, {allowLocalFile: true});
  const bytes = readFileSync(path);
  const entries = new Map();  // weight name -> {sum2, counts, shapes}
  for (const t of tensorInfos) {
    const m = /^(.*)\.(in_sum2|counts|in_sum)$/.exec(t.name);
    if (!m || t.dtype !== 0) throw new Error(`${path}: tensor ${t.name} (ggml type ${t.dtype}) is not an F32 imatrix tensor`);
    const shape = t.shape.map(Number), n = shape.reduce((a, b) => a * b, 1);
    const start = Number(tensorDataOffset) + Number(t.offset);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + 4 * n));
    const e = entries.get(m[1]) ?? {};
    e[m[2]] = {shape, data};
    entries.set(m[1], e);
  }
  return {entries, meta: metadata};
}

// Sums the files' entries in float64 (every file must hold the same entries with the same shapes as the first).
async function loadSum(paths, problems) {
  const files = await Promise.all(paths.map(load));
  const sum = {entries: new Map(), meta: {...files[0].meta}};
  sum.meta["imatrix.chunk_count"] = files.reduce((a, f) => a + Number(f.meta["imatrix.chunk_count"]), 0);
  for (const [name, e] of files[0].entries) {
    const s = {};
    for (const [part, t] of Object.entries(e)) s[part] = {shape: t.shape, data: Float64Array.from(t.data)};
    for (const [i, f] of files.entries()) {
      if (i === 0) continue;
      for (const [part, t] of Object.entries(s)) {
        const o = f.entries.get(name)?.[part];
        if (!o || String(o.shape) !== String(t.shape)) {
          problems.push(`${paths[i]}: ${name}.${part} has shape ${o?.shape}, ${paths[0]} ${t.shape}`);
          continue;
        }
        o.data.forEach((x, j) => { t.data[j] += x; });
      }
    }
    sum.entries.set(name, s);
  }
  return sum;
}

const [refPath, testArg, tolArg] = process.argv.slice(2);
const tol = Number(tolArg);
const testPath = testArg.includes(",") ? `the sum of ${testArg.split(",").length} files` : testArg;
const problems = [];
const [ref, test] = await Promise.all([load(refPath), loadSum(testArg.split(","), problems)]);
for (const name of ref.entries.keys()) if (!test.entries.has(name)) problems.push(`${name}: missing in ${testPath}`);
for (const name of test.entries.keys()) if (!ref.entries.has(name)) problems.push(`${name}: not in ${refPath}`);
for (const key of ["imatrix.chunk_count", "imatrix.chunk_size"])
  if (Number(ref.meta[key]) !== Number(test.meta[key]))
    problems.push(`${key}: ${ref.meta[key]} in ${refPath}, ${test.meta[key]} in ${testPath}`);

const median = (v) => { const s = [...v].sort((a, b) => a - b); return s.length ? s[s.length >> 1] : 0; };
const kinds = new Map();  // kind -> {entries, max, medians: []}
const allRel = [];
for (const [name, r] of ref.entries) {
  const t = test.entries.get(name);
  if (!t) continue;
  for (const part of ["in_sum2", "counts"])
    if (!t[part] || String(t[part].shape) !== String(r[part].shape))
      problems.push(`${name}.${part}: shape ${t[part]?.shape} in ${testPath}, ${r[part].shape} in ${refPath}`);
  // Values are still compared where only the dimensions' spelling differs ({K, 1} against {K}).
  if (["in_sum2", "counts"].some((part) => t[part]?.data.length !== r[part].data.length)) continue;
  if (String(t.counts.data) !== String(r.counts.data))
    problems.push(`${name}.counts: ${t.counts.data} in ${testPath}, ${r.counts.data} in ${refPath}`);
  const cols = r.in_sum2.data.length / r.counts.data.length;
  const rm = r.in_sum2.data.map((s, i) => s / r.counts.data[Math.floor(i / cols)]);
  const tm = t.in_sum2.data.map((s, i) => s / t.counts.data[Math.floor(i / cols)]);
  const floor = 1e-6 * rm.reduce((a, b) => Math.max(a, b), 0);
  const rel = Array.from(rm, (x, i) => Math.abs(tm[i] - x) / Math.max(Math.abs(x), floor));
  const max = rel.reduce((a, b) => Math.max(a, b), 0);
  if (!(max <= tol)) problems.push(`${name}: mean square differs by ${max.toExponential(2)} relative (tolerance ${tol})`);
  const kind = /blk\.\d+\.(.*)\.weight$/.exec(name)?.[1] ?? name;
  const k = kinds.get(kind) ?? {entries: 0, max: 0, medians: []};
  k.entries += 1;
  k.max = Math.max(k.max, max);
  k.medians.push(median(rel));
  kinds.set(kind, k);
  allRel.push(...rel);
}
for (const [kind, k] of kinds)
  console.log(`${kind.padEnd(12)} ${k.entries} tensors  mean-square rel diff: max ${k.max.toExponential(2)}, ` +
              `median ${median(k.medians).toExponential(2)} (worst layer ${Math.max(...k.medians).toExponential(2)})`);
const max_rel = allRel.reduce((a, b) => Math.max(a, b), 0);
const pass = problems.length === 0;
console.log(JSON.stringify({entries: ref.entries.size, max_rel, median_rel: median(allRel),
                            problems: problems.slice(0, 20), pass}));
process.exit(pass ? 0 : 1);
