// Validates the texts `tandem bench throughput|latency --guided-json SCHEMA --save-outputs FILE` saved,
// with a validator no one here wrote (ajv, JSON Schema 2020-12): every line's text must parse as JSON
// and be valid against SCHEMA. Prints "saved outputs valid: N" and exits 0, or names the first bad text.
// Usage: node validate_saved_outputs.mjs <npm_dir> <schema.json> <outputs.jsonl>   (npm_dir holds node_modules/ajv)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const [, , npmDir, schemaPath, outputsPath] = process.argv;
const require = createRequire(npmDir.endsWith('/') ? npmDir : npmDir + '/');
const Ajv2020 = require('ajv/dist/2020').default;
const ajv = new Ajv2020({ allErrors: true });
const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, 'utf8')));

const lines = readFileSync(outputsPath, 'utf8').split('\n').filter((l) => l.length > 0);
if (lines.length === 0) {
  console.error('no saved outputs');
  process.exit(1);
}
for (const line of lines) {
  const { request, text } = JSON.parse(line);
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    console.error(`request ${request}: not JSON: ${JSON.stringify(text)}`);
    process.exit(1);
  }
  if (!validate(doc)) {
    console.error(`request ${request}: ${JSON.stringify(validate.errors)} in ${text}`);
    process.exit(1);
  }
}
console.log(`saved outputs valid: ${lines.length}`);
