#!/usr/bin/env bash
# The main job on the bundled default model (stories260K, pretrained on TinyStories): set-up, build,
# inspect, perplexity on held-out text, zero-shot accuracy, and a generated sample. Later stages (quantize, compare) extend it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh ptq >/dev/null
ptq=build/ptq
model=data/models/stories260K

echo "== inspect"
$ptq inspect $model
echo
echo "== perplexity (in-domain TinyStories and out-of-domain Moby Dick, 512-token windows)"
$ptq eval ppl $model --data data/tinystories-valid.txt --seqlen 512
$ptq eval ppl $model --data data/moby-dick.txt --seqlen 512 --max-windows 50
echo
echo "== zero-shot tasks (in-domain: continuation = true next sentence among 4, cloze = last word)"
$ptq eval tasks $model --tasks data/tasks/tinystories-continuation.jsonl data/tasks/tinystories-cloze.jsonl
echo
echo "== generate (greedy)"
$ptq generate $model --prompt "Once upon a time" -n 80
