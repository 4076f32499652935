// @huggingface/gguf (an independent GGUF parser) reads a file: prints its metadata keys and tensor infos as
// JSON. Usage: node gguf_parse.mjs FILE.gguf
import {gguf} from "@huggingface/gguf";

const path = process.argv[2];
const {metadata, tensorInfos} = await gguf(path, {allowLocalFile: true});
const meta = {};
for (const [k, v] of Object.entries(metadata)) meta[k] = Array.isArray(v) ? {array: v.length} : typeof v === "bigint" ? Number(v) : v;
process.stdout.write(JSON.stringify({
  metadata: meta,
  tensors: tensorInfos.map((t) => ({name: t.name, shape: t.shape.map(Number), dtype: t.dtype, offset: Number(t.offset)})),
}) + "\n");
