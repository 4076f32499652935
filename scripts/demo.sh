#!/usr/bin/env bash
# The main job on the bundled default model (stories260K, pretrained on TinyStories): set-up, build, then
# quantize it (GPTQ and, for comparison, round-to-nearest: 4-bit weights in groups of 32), and show FP vs
# quantized perplexity and zero-shot accuracy side by side, plus a sample from the quantized model; then
# activation quantization (W8A8, W4A4) of the model with planted outlier channels, naive vs the methods.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh ptq >/dev/null
ptq=build/ptq
model=data/models/stories260K
out=out
mkdir -p $out

echo "== inspect"
$ptq inspect $model
echo
echo "== quantize: W4, groups of 32 (down_proj reads 172 columns, so it stays FP: the policy says so)"
$ptq quantize $model --recipe configs/w4a16-gptq.yaml --group-size 32 -o $out/stories260K-w4g32-gptq --force \
  | tail -4
$ptq quantize $model --recipe configs/w4a16-rtn.yaml --group-size 32 -o $out/stories260K-w4g32-rtn --force 2>/dev/null \
  | tail -3
echo
echo "== perplexity: FP vs RTN vs GPTQ (in-domain TinyStories, 512-token windows; out-of-domain Moby Dick)"
$ptq eval ppl $model $out/stories260K-w4g32-rtn $out/stories260K-w4g32-gptq --data data/tinystories-valid.txt --seqlen 512
$ptq eval ppl $model $out/stories260K-w4g32-rtn $out/stories260K-w4g32-gptq --data data/moby-dick.txt --seqlen 512 \
  --max-windows 50
echo
echo "== activation quantization: plant LLM-like outlier channels (function-preserving), then W8A8 and W4A4:"
echo "   naive per-tensor static / per-token dynamic vs SmoothQuant and MergeQuant (static per-channel, folded)"
$ptq -q outlierize $model -o $out/stories260K-outlier --channels 4 --scale 50 --force >/dev/null
acts=(w8a8-rtn-static w8a8-smoothquant w4a4-rtn-dynamic w4a4-mergequant)
for r in "${acts[@]}"; do
  $ptq -q quantize $out/stories260K-outlier --recipe configs/$r.yaml -o $out/stories260K-outlier-$r --force >/dev/null
done
$ptq eval ppl $out/stories260K-outlier "${acts[@]/#/$out/stories260K-outlier-}" --data data/tinystories-valid.txt \
  --seqlen 512 --max-windows 100
echo
echo "== zero-shot accuracy (continuation: the true next sentence among 4; cloze: the last word)"
$ptq eval tasks $model $out/stories260K-w4g32-rtn $out/stories260K-w4g32-gptq \
  --tasks data/tasks/tinystories-continuation.jsonl data/tasks/tinystories-cloze.jsonl
echo
echo "== generate from the GPTQ checkpoint (greedy)"
$ptq generate $out/stories260K-w4g32-gptq --prompt "Once upon a time" -n 80
