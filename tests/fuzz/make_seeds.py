#!/usr/bin/env python3
"""Seed corpora and dictionaries of the libFuzzer targets (tests/fuzz), made from the bundled files.

    tests/fuzz/make_seeds.py REPO OUT

writes OUT/seeds/<target>/* (small valid inputs, and a few realistic invalid ones) and OUT/dict/<target>.dict
(libFuzzer dictionaries: the string literals of the parser's source, i.e. the keys and names it looks for).
Deterministic; standard library only. scripts/fuzz.sh runs it before every fuzzing run; the hand-made seeds and
the regression inputs live in tests/fuzz/corpus/<target>/ and are passed to the targets next to these.
"""
import json
import os
import random
import re
import struct
import sys

REPO, OUT = sys.argv[1], sys.argv[2]
rng = random.Random(0)


def repo(*p):
    return os.path.join(REPO, *p)


def put(target, name, data):
    d = os.path.join(OUT, "seeds", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(*p):
    with open(repo(*p), "rb") as f:
        return f.read()


# ---- safetensors ----------------------------------------------------------------------------------------------
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape)] -> bytes of a valid file (data: deterministic bytes)."""
    header, off, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        blobs.append(bytes(rng.randrange(256) for _ in range(n)))
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def real_header(path):
    data = read(path)
    (n,) = struct.unpack("<Q", data[:8])
    return data, n, json.loads(data[8 : 8 + n])


def safetensors_seeds():
    data, n, header = real_header("data/models/stories260K/model.safetensors")
    # The real header over a truncated data area: realistic JSON, refused for its offsets.
    put("safetensors", "stories260K-truncated", data[: 8 + n + 512])
    # The real names and metadata over tiny shapes: valid.
    names = [k for k in header if k != "__metadata__"][:12]
    put("safetensors", "stories260K-tiny", safetensors([(k, header[k]["dtype"], [2, 3]) for k in names],
                                                        header.get("__metadata__", {"format": "pt"})))
    put("safetensors", "dtypes", safetensors([(f"t.{d.lower()}", d, [3]) for d in SIZES] + [("empty", "F32", [0]),
                                             ("scalar", "F32", [])], {"format": "pt", "k": "v"}))
    put("safetensors", "empty-object", struct.pack("<Q", 2) + b"{}")
    _, _, sotu = real_header("data/models/sotu-llama-8m/model.safetensors")
    names = [k for k in sotu if k != "__metadata__"][:6]
    put("safetensors", "sotu-tiny-f16", safetensors([(k, "F16", [4]) for k in names]))
    # Stats files are safetensors with metadata (tests/fuzz/corpus/stats: `ptq calibrate` of stories260K, layer 0).
    for f in sorted(os.listdir(repo("tests/fuzz/corpus/stats"))):
        put("safetensors", f, read("tests/fuzz/corpus/stats", f))


def index_seeds():
    wm = {"a": "shard-a.safetensors", "b": "shard-a.safetensors", "c": "shard-b.safetensors"}
    put("safetensors_index", "valid", json.dumps({"metadata": {"total_size": 36}, "weight_map": wm}, indent=2))
    put("safetensors_index", "one-shard", json.dumps({"weight_map": {"c": "shard-b.safetensors"}}))
    put("safetensors_index", "missing", json.dumps({"weight_map": {"a": "shard-c.safetensors"}}))


# ---- GGUF -----------------------------------------------------------------------------------------------------
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i", T_F32: "<f", T_BOOL: "<B",
          T_U64: "<Q", T_I64: "<q", T_F64: "<d"}


def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_read_kvs(data):
    """The KV section of a GGUF v2/v3 file as [(key, type, value)] (arrays: (elem_type, [values]))."""
    pos = 8
    n_tensors, n_kv = struct.unpack_from("<QQ", data, pos)
    pos += 16

    def rstr():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        s = data[pos + 8 : pos + 8 + n]
        pos += 8 + n
        return s

    def rval(t):
        nonlocal pos
        if t == T_STR:
            return rstr()
        if t == T_ARR:
            et, cnt = struct.unpack_from("<IQ", data, pos)
            pos += 12
            return (et, [rval(et) for _ in range(cnt)])
        (v,) = struct.unpack_from(SCALAR[t], data, pos)
        pos += struct.calcsize(SCALAR[t])
        return v

    kvs = []
    for _ in range(n_kv):
        key = rstr().decode()
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        kvs.append((key, t, rval(t)))
    return kvs, n_tensors, pos


def wval(t, v):
    if t == T_STR:
        return gstr(v)
    if t == T_ARR:
        et, vals = v
        return struct.pack("<IQ", et, len(vals)) + b"".join(wval(et, x) for x in vals)
    return struct.pack(SCALAR[t], v)


GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20), "q8_0": (8, 32, 34),
        "bf16": (30, 1, 2)}


def tensor_bytes(kind, n):
    t, block, size = GGML[kind]
    if kind == "f32":
        return b"".join(struct.pack("<f", rng.uniform(-0.1, 0.1)) for _ in range(n))
    if kind in ("f16", "bf16"):
        if kind == "f16":
            return b"".join(struct.pack("<e", rng.uniform(-0.1, 0.1)) for _ in range(n))
        return b"".join(struct.pack("<f", rng.uniform(-0.1, 0.1))[2:] for _ in range(n))
    out = b""
    for _ in range(n // block):
        scales = struct.pack("<e", 0.01) + (struct.pack("<e", -0.05) if kind == "q4_1" else b"")
        out += scales + bytes(rng.randrange(256) for _ in range(size - len(scales)))
    return out


def gguf(kvs, tensors, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, dims (ggml order), kind)] -> bytes."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        head += gstr(k) + struct.pack("<I", t) + wval(t, v)
    infos, data = b"", b""
    for name, dims, kind in tensors:
        n = 1
        for d in dims:
            n *= d
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", GGML[kind][0], len(data))
        data += tensor_bytes(kind, n)
        data += b"\0" * (-len(data) % alignment)
    out = head + infos
    out += b"\0" * (-len(out) % alignment)
    return out + data


def tiny_llama(vocab_kvs, n_vocab, kinds, layers=1, hidden=32, heads=2, kv_heads=1, ffn=32, tied=False):
    kvs = [("general.architecture", T_STR, "llama"), ("general.name", T_STR, "fuzz-tiny"),
           ("general.alignment", T_U32, 32), ("llama.context_length", T_U32, 128),
           ("llama.embedding_length", T_U32, hidden), ("llama.block_count", T_U32, layers),
           ("llama.feed_forward_length", T_U32, ffn), ("llama.attention.head_count", T_U32, heads),
           ("llama.attention.head_count_kv", T_U32, kv_heads), ("llama.rope.dimension_count", T_U32, hidden // heads),
           ("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5), ("llama.rope.freq_base", T_F32, 10000.0)]
    kvs += vocab_kvs
    hd = hidden // heads
    t = [("token_embd.weight", [hidden, n_vocab], kinds[0]), ("output_norm.weight", [hidden], "f32")]
    if not tied:
        t.append(("output.weight", [hidden, n_vocab], kinds[1]))
    for l in range(layers):
        p = f"blk.{l}."
        t += [(p + "attn_norm.weight", [hidden], "f32"), (p + "ffn_norm.weight", [hidden], "f32"),
              (p + "attn_q.weight", [hidden, heads * hd], kinds[2]), (p + "attn_k.weight", [hidden, kv_heads * hd], kinds[3]),
              (p + "attn_v.weight", [hidden, kv_heads * hd], kinds[4]), (p + "attn_output.weight", [heads * hd, hidden], kinds[5]),
              (p + "ffn_gate.weight", [hidden, ffn], kinds[0]), (p + "ffn_up.weight", [hidden, ffn], kinds[1]),
              (p + "ffn_down.weight", [ffn, hidden], kinds[2])]
    return gguf(kvs, t)


def gguf_seeds():
    real = read("data/models/stories260K/stories260K.gguf")
    kvs, _, end = gguf_read_kvs(real)
    vocab = {k: (t, v) for k, t, v in kvs if k.startswith("tokenizer.")}
    n = 300  # the first pieces: <unk> <s> </s>, the 256 bytes, some merges

    def cut(key):
        t, (et, vals) = vocab[key]
        return (key, t, (et, vals[:n]))

    small_vocab = [cut("tokenizer.ggml.tokens"), cut("tokenizer.ggml.scores"), cut("tokenizer.ggml.token_type")]
    small_vocab += [(k, t, v) for k, (t, v) in vocab.items() if t != T_ARR]
    for name, kinds, extra in [("tiny-f16-tied", ["f16"] + ["f32"] * 5, {"tied": True}),
                               ("tiny-quant", ["q8_0", "q4_0", "q4_1", "f16", "bf16", "q8_0"], {}),
                               ("tiny-tied-2layers", ["q4_0"] * 6, {"layers": 2, "tied": True})]:
        data = tiny_llama(small_vocab, n, kinds, **extra)
        put("gguf", name, data)
        put("gguf_model", name, data)
    # The real file's metadata and tensor infos over a truncated data section (refused for its extents).
    put("gguf", "stories260K-header", real[: min(len(real), end + 4096)])
    # Scalar and array types of every kind, no tensors.
    every = [(f"k.{i}", t, v) for i, (t, v) in enumerate([(T_U8, 1), (T_I8, -1), (T_U16, 2), (T_I16, -2), (T_U32, 3),
                                                          (T_I32, -3), (T_F32, 1.5), (T_BOOL, 1), (T_STR, "s"),
                                                          (T_U64, 4), (T_I64, -4), (T_F64, 2.5),
                                                          (T_ARR, (T_I32, [1, 2])), (T_ARR, (T_STR, ["a", "b"])),
                                                          (T_ARR, (T_F32, [0.5]))])]
    put("gguf", "every-type", gguf(every, []))


# ---- text formats ---------------------------------------------------------------------------------------------
def text_seeds():
    for model in ("stories260K", "sotu-llama-8m"):
        put("config", model + ".json", read("data/models", model, "config.json"))
    base = json.loads(read("data/models/stories260K/config.json"))
    for name, change in [("mistral", {"model_type": "mistral", "sliding_window": 64}),
                         ("qwen2", {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 32}),
                         ("gqa-head-dim", {"num_key_value_heads": 2, "head_dim": 16, "eos_token_id": [2, 3]})]:
        put("config", name + ".json", json.dumps({**base, **change}, indent=2))
    put("config", "opt.json", json.dumps({"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2,
                                          "num_attention_heads": 4, "vocab_size": 512, "max_position_embeddings": 128,
                                          "ffn_dim": 256, "do_layer_norm_before": False, "word_embed_proj_dim": 32,
                                          "activation_function": "gelu", "enable_bias": True}, indent=2))
    put("sentencepiece", "stories260K.model", read("data/models/stories260K/tokenizer.model"))
    for f in sorted(os.listdir(repo("tests/fuzz/tokenizers"))):
        put("tokenizer_json", f, read("tests/fuzz/tokenizers", f))
    for f in sorted(os.listdir(repo("configs"))):
        if f.endswith(".yaml"):
            put("recipe", f, read("configs", f))
    for d in ("data/tasks", "tests/fixtures/tasks"):
        for f in sorted(os.listdir(repo(d))):
            if f.endswith(".jsonl"):
                lines = read(d, f).split(b"\n")[:4]
                put("task", d.replace("/", "-") + "-" + f, b"\n".join(lines) + b"\n")
    for f in ("tinystories-valid.txt", "moby-dick.txt", "sotu-test.txt"):
        text = read("data", f)
        for i, start in enumerate((0, len(text) // 3, 2 * len(text) // 3)):
            put("tokenize_text", f"{f}-{i}", text[start : start + 200])
    for i, s in enumerate(["  leading and  double spaces\t\ttabs\n\nnewlines  ", "caf\u00e9 cafe\u0301 \u4e2d\u6587 "
                           "\U0001F642 \u0627\u0644\u0639\u0631\u0628\u064a\u0629", "it's 12345 don't I'LL <|endoftext|>x",
                           "<s></s><unk>\u2581\u2581 \u2581x", "\ufeffBOM \u200b zero-width"]):
        put("tokenize_text", f"special-{i}", s)
    put("tokenize_text", "invalid-utf8", b"ok \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 end")


# ---- dictionaries ---------------------------------------------------------------------------------------------
DICT_SOURCES = {
    "config": ["lib/model/config.cpp"],
    "gguf": ["lib/io/gguf.cpp", "lib/model/gguf_model.cpp"],
    "gguf_model": ["lib/model/gguf_model.cpp"],
    "safetensors": ["lib/io/safetensors.cpp", "lib/io/dtype.cpp"],
    "safetensors_index": ["lib/io/safetensors.cpp"],
    "tokenizer_json": ["lib/model/tokenizer_json.cpp"],
    "recipe": ["lib/pipeline/recipe.cpp", "lib/quant/formats.cpp", "lib/quant/act_quant.cpp",
               "lib/algorithms/migration.cpp", "lib/algorithms/algorithm.cpp", "calibration/data.cpp"],
    "task": ["lib/eval/task_data.cpp"],
    "stats": ["calibration/stats.cpp", "lib/io/safetensors.cpp"],
}


def dictionaries():
    os.makedirs(os.path.join(OUT, "dict"), exist_ok=True)
    for target, sources in DICT_SOURCES.items():
        words = set()
        for src in sources:
            if os.path.exists(repo(src)):
                text = open(repo(src), encoding="utf-8", errors="replace").read()
                words.update(re.findall(r'"([A-Za-z_][A-Za-z0-9_.\-]{1,40})"', text))
        with open(os.path.join(OUT, "dict", target + ".dict"), "w") as f:
            for w in sorted(words):
                f.write(f'"{w}"\n')


safetensors_seeds()
index_seeds()
gguf_seeds()
text_seeds()
dictionaries()
