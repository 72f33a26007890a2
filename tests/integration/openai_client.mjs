// Drives a running Tandem server with the official `openai` npm client (a client no one here wrote):
// completions and chat, streaming and not, usage, logprobs, and the client's typed errors.
// Usage: node openai_client.mjs <base_url> <npm_dir>   (npm_dir holds node_modules/openai)
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const [, , baseURL, npmDir] = process.argv;
const require = createRequire(npmDir.endsWith('/') ? npmDir : npmDir + '/');
const OpenAI = require('openai');
const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 60000 });

const models = await client.models.list();
const model = models.data[0].id;
assert.ok(model, 'a model is listed');

// Completions, not streamed.
const c = await client.completions.create({ model, prompt: 'The capital of France is', max_tokens: 5, temperature: 0, logprobs: 2 });
assert.equal(c.object, 'text_completion');
assert.equal(typeof c.choices[0].text, 'string');
assert.ok(c.choices[0].text.length > 0, 'completion text is not empty');
assert.equal(c.choices[0].finish_reason, 'length');
assert.equal(c.usage.completion_tokens, 5);
assert.ok(c.usage.prompt_tokens > 0);
assert.equal(c.choices[0].logprobs.tokens.length, 5);

// Completions, streamed, with usage.
let text = '';
let usage = null;
let finish = null;
const cs = await client.completions.create({ model, prompt: 'The capital of France is', max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
for await (const chunk of cs) {
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) {
    text += ch.text;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
}
assert.equal(text, c.choices[0].text, 'greedy streamed text equals greedy text');
assert.equal(finish, 'length');
assert.equal(usage.completion_tokens, 5);

// Chat, not streamed, with logprobs.
const r = await client.chat.completions.create({ model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 });
assert.equal(r.object, 'chat.completion');
assert.equal(r.choices[0].message.role, 'assistant');
assert.equal(typeof r.choices[0].message.content, 'string');
assert.equal(r.usage.completion_tokens, 6);
assert.equal(r.choices[0].logprobs.content.length, 6);
assert.equal(r.choices[0].logprobs.content[0].top_logprobs.length, 2);

// Chat, streamed, n = 2.
const contents = ['', ''];
let roles = 0;
const rs = await client.chat.completions.create({ model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }], max_tokens: 6, temperature: 0, n: 2, stream: true });
for await (const chunk of rs) {
  for (const ch of chunk.choices) {
    if (ch.delta.role) roles++;
    if (ch.delta.content) contents[ch.index] += ch.delta.content;
  }
}
assert.equal(roles, 2);
assert.equal(contents[0], r.choices[0].message.content, 'greedy chat: streamed == not streamed');
assert.equal(contents[1], contents[0], 'greedy: both choices agree');

// Typed errors.
await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 2 }), (e) => e.status === 404 && e instanceof OpenAI.NotFoundError);
await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: -1 }), (e) => e.status === 400 && e instanceof OpenAI.BadRequestError && e.param === 'max_tokens');

console.log('openai client: ok');
