// Structured output end to end, checked by validators no one here wrote: asks a server running a
// random-weight model for JSON under realistic schemas (response_format json_schema and json_object,
// vLLM's guided_json, guided_regex and guided_choice; chat and completions; streamed and not; n = 2),
// and validates every reply with ajv (JSON Schema 2020-12), JavaScript's RegExp and the choice list.
// The official `openai` client sends response_format through chat.completions.create.
// Usage: node structured_output_client.mjs <base_url> <npm_dir> <model>   (npm_dir holds node_modules/{openai,ajv})
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const [, , baseURL, npmDir, model] = process.argv;
const require = createRequire(npmDir.endsWith('/') ? npmDir : npmDir + '/');
const OpenAI = require('openai');
const Ajv2020 = require('ajv/dist/2020').default;
const ajv = new Ajv2020({ allErrors: true });
const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 240000 });

const person = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 24 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    email: { type: 'string', pattern: '^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$' },
    tags: { type: 'array', items: { enum: ['admin', 'staff', 'guest'] }, maxItems: 3 },
    address: {
      type: 'object',
      properties: { street: { type: 'string', maxLength: 30 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
      required: ['street', 'zip'],
      additionalProperties: false,
    },
    active: { type: 'boolean' },
    nickname: { anyOf: [{ type: 'string', maxLength: 12 }, { type: 'null' }] },
  },
  required: ['name', 'age', 'address', 'active'],
  additionalProperties: false,
};
const order = {
  $defs: {
    item: {
      type: 'object',
      properties: {
        sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{3}$' },
        qty: { type: 'integer', minimum: 1, maximum: 99 },
        price: { type: 'number', minimum: 0 },
      },
      required: ['sku', 'qty', 'price'],
      additionalProperties: false,
    },
  },
  type: 'object',
  properties: {
    id: { type: 'integer', minimum: 1 },
    status: { enum: ['open', 'paid', 'shipped'] },
    items: { type: 'array', items: { $ref: '#/$defs/item' }, minItems: 1, maxItems: 3 },
    currency: { const: 'EUR' },
    note: { type: ['string', 'null'], maxLength: 20 },
  },
  required: ['id', 'status', 'items', 'currency'],
  additionalProperties: false,
};

async function post(path, body) {
  const r = await fetch(baseURL + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, text };
}

let checked = 0;
function checkJson(text, schema, what) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    assert.fail(`${what}: not JSON: ${JSON.stringify(text)}`);
  }
  if (schema) {
    const ok = ajv.validate(schema, doc);
    assert.ok(ok, `${what}: ${JSON.stringify(ajv.errors)} in ${text}`);
  } else {
    assert.ok(doc !== null && typeof doc === 'object' && !Array.isArray(doc), `${what}: not an object: ${text}`);
  }
  ++checked;
}

const messages = [{ role: 'user', content: 'Describe a person as JSON.' }];
// The budget and the seeds are sized for the sanitizer build, where the demo model's lm_head makes a token
// cost ~50 ms: 160 tokens and three seeds took 228 s of the client's 240 s there. 96 tokens still hold
// each schema's shortest document many times over (the constraint closes the document in time).
const seeds = 2;
const common = { model, temperature: 1.0, max_tokens: 96 };
const requests = [];
for (let seed = 1; seed <= seeds; ++seed) {
  // The official client, response_format json_schema (strict) on chat.
  requests.push(
    client.chat.completions
      .create({ ...common, seed, messages, response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person, strict: true } } })
      .then((r) => checkJson(r.choices[0].message.content, person, `openai json_schema person seed ${seed}`)),
  );
  requests.push(
    client.chat.completions
      .create({ ...common, seed, messages, response_format: { type: 'json_schema', json_schema: { name: 'order', schema: order } } })
      .then((r) => checkJson(r.choices[0].message.content, order, `openai json_schema order seed ${seed}`)),
  );
  requests.push(
    client.chat.completions
      .create({ ...common, seed, messages, response_format: { type: 'json_object' } })
      .then((r) => checkJson(r.choices[0].message.content, null, `openai json_object seed ${seed}`)),
  );
  // vLLM's parameters on completions (raw HTTP: extra fields).
  requests.push(
    post('/v1/completions', { ...common, seed, prompt: 'JSON:', guided_json: order, n: 2 }).then((r) => {
      assert.equal(r.status, 200, r.text);
      const body = JSON.parse(r.text);
      assert.equal(body.choices.length, 2);
      for (const c of body.choices) checkJson(c.text, order, `guided_json completions seed ${seed} choice ${c.index}`);
    }),
  );
  requests.push(
    post('/v1/completions', { ...common, seed, prompt: 'Code:', guided_regex: '[0-9]{3}-[a-z]{2,4}( ok)?' }).then((r) => {
      assert.equal(r.status, 200, r.text);
      const text = JSON.parse(r.text).choices[0].text;
      assert.match(text, /^[0-9]{3}-[a-z]{2,4}( ok)?$/, `guided_regex seed ${seed}`);
      ++checked;
    }),
  );
  requests.push(
    post('/v1/chat/completions', { ...common, seed, messages, guided_choice: ['positive', 'negative', 'neutral'] }).then((r) => {
      assert.equal(r.status, 200, r.text);
      const body = JSON.parse(r.text);
      assert.ok(['positive', 'negative', 'neutral'].includes(body.choices[0].message.content), r.text);
      assert.equal(body.choices[0].finish_reason, 'stop', r.text);
      ++checked;
    }),
  );
}
// Streamed through the official client: the deltas joined are the document.
requests.push(
  (async () => {
    const stream = await client.chat.completions.create({
      ...common, seed: 9, messages, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person } },
    });
    let content = '';
    for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? '';
    checkJson(content, person, 'streamed person');
  })(),
);
// An unsupported schema keyword is a 400 naming the parameter and the keyword.
requests.push(
  client.chat.completions
    .create({ ...common, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'email' } } } })
    .then(
      () => assert.fail('format should be refused'),
      (e) => {
        assert.equal(e.status, 400);
        assert.match(e.message, /'format'/);
        assert.equal(e.param, 'response_format');
      },
    ),
);
await Promise.all(requests);
assert.equal(checked, seeds * 7 + 1);
console.log(`structured output client: ok (${checked} replies validated)`);
