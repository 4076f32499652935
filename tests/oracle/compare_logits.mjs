// Compares two logit dumps {"logits": [[...]]} (ptq vs llama.cpp) position by position. Prints one JSON line:
// max |diff|, top-1 agreement, mean and max KL(p_a || p_b). Exit 1 when a limit given is exceeded.
// Usage: node compare_logits.mjs A.json B.json [--max-abs X] [--max-mean-kl Y] [--top1] [--top1-tie D]
// --top1: the same top-1 token at every position; with --top1-tie D a position where the two choices are within D
// (logits) of each other in both dumps counts as a tie, not a disagreement (reported as top1_ties).
import {readFileSync} from "node:fs";

const args = process.argv.slice(2);
const [a, b] = args.slice(0, 2).map((p) => JSON.parse(readFileSync(p, "utf8")).logits);
const opt = (name) => {
  const i = args.indexOf(name);
  return i < 0 ? undefined : Number(args[i + 1]);
};
if (a.length !== b.length || a[0].length !== b[0].length)
  throw new Error(`shapes differ: ${a.length}x${a[0].length} vs ${b.length}x${b[0].length}`);
const logSoftmax = (row) => {
  const m = Math.max(...row);
  const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  return row.map((v) => v - lse);
};
const argmax = (row) => row.reduce((best, v, i) => (v > row[best] ? i : best), 0);
const tie = opt("--top1-tie") ?? 0;
let maxAbs = 0, top1 = 0, ties = 0, klSum = 0, klMax = 0;
for (let t = 0; t < a.length; ++t) {
  for (let v = 0; v < a[t].length; ++v) maxAbs = Math.max(maxAbs, Math.abs(a[t][v] - b[t][v]));
  const ia = argmax(a[t]), ib = argmax(b[t]);
  if (ia === ib) ++top1;
  else if (a[t][ia] - a[t][ib] <= tie && b[t][ib] - b[t][ia] <= tie) ++ties;
  const la = logSoftmax(a[t]), lb = logSoftmax(b[t]);
  let kl = 0;
  for (let v = 0; v < la.length; ++v) kl += Math.exp(la[v]) * (la[v] - lb[v]);
  klSum += kl;
  klMax = Math.max(klMax, kl);
}
const res = {positions: a.length, max_abs_diff: maxAbs, top1_agree: top1, top1_ties: ties, mean_kl: klSum / a.length,
             max_kl: klMax};
let ok = true;
if (opt("--max-abs") !== undefined && !(maxAbs <= opt("--max-abs"))) ok = false;
if (opt("--max-mean-kl") !== undefined && !(res.mean_kl <= opt("--max-mean-kl"))) ok = false;
if (args.includes("--top1") && top1 + ties !== a.length) ok = false;
res.ok = ok;
process.stdout.write(JSON.stringify(res) + "\n");
process.exit(ok ? 0 : 1);
