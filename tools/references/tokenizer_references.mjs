// Encodes tests/data/tokenizer/corpus.json and invalid_utf8.json with @lenml/tokenizers (a Node
// port of Hugging Face tokenizers, independent of our C++ code) and the real Qwen3 and Llama-3.1
// tokenizer files, writing tests/data/tokenizer/references_<model>.json for tests/tokenizer.
//
//   node tools/references/tokenizer_references.mjs [DATA_DIR]     (DATA_DIR defaults to ./data, see scripts/fetch_data.sh)
//
// Invalid UTF-8 cannot live in a JS string: each byte string is decoded with TextDecoder, which
// replaces ill-formed subsequences by U+FFFD per maximal subpart (WHATWG Encoding), and the result
// is encoded; our tokenizer promises that same replacement (tokenizer.h).
import fs from 'fs';
import path from 'path';

const dataDir = process.argv[2] ?? 'data';
const { TokenizerLoader } = await import(path.resolve(dataDir, 'npm/node_modules/@lenml/tokenizers/dist/main.mjs'));
const outDir = 'tests/data/tokenizer';
const corpus = JSON.parse(fs.readFileSync(path.join(outDir, 'corpus.json'), 'utf8'));
const invalid = JSON.parse(fs.readFileSync(path.join(outDir, 'invalid_utf8.json'), 'utf8'));
const decoder = new TextDecoder('utf-8', { fatal: false });

for (const model of ['qwen3', 'llama3_1']) {
  const dir = path.join(dataDir, 'tokenizers', model);
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')),
  });
  const encode = (s, add) => Array.from(tokenizer.encode(s, { add_special_tokens: add }));
  const decode = (ids, skip) => ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  const out = {
    generator: 'tools/references/tokenizer_references.mjs with @lenml/tokenizers ' +
      JSON.parse(fs.readFileSync(path.join(dataDir, 'npm/node_modules/@lenml/tokenizers/package.json'), 'utf8')).version,
    model,
    encode: corpus.map((s) => encode(s, false)),
    encode_add_special: corpus.map((s) => encode(s, true)),
    decode_skip_special: corpus.map((s) => decode(encode(s, false), true)),
    // String.prototype.normalize (ICU), for the round-trip property decode(encode(s)) == NFC(s).
    nfc: corpus.map((s) => s.normalize('NFC')),
    invalid_utf8: invalid.map((hex) => encode(decoder.decode(Buffer.from(hex, 'hex')), false)),
  };
  // One line per string keeps diffs of the committed file readable.
  const lines = ['{'];
  for (const [key, value] of Object.entries(out)) {
    if (Array.isArray(value)) {
      lines.push(`"${key}": [`);
      value.forEach((v, i) => lines.push(JSON.stringify(v) + (i + 1 < value.length ? ',' : '')));
      lines.push(key === 'invalid_utf8' ? ']' : '],');
    } else {
      lines.push(`"${key}": ${JSON.stringify(value)},`);
    }
  }
  lines.push('}');
  fs.writeFileSync(path.join(outDir, `references_${model}.json`), lines.join('\n') + '\n');
  console.log(`${model}: ${corpus.length} strings, ${invalid.length} invalid byte strings`);
}
