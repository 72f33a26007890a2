// Drives issue 21's API features with the official `openai` npm client (a client no one here wrote):
// a served model name with a slash, a completions request with a list of prompts, and chat replies
// whose think block comes back as `reasoning_content` (the server runs --reasoning-parser over a fake
// engine scripted to answer "<think>\nThe user greets me.\n</think>\n\nHello! I am fine.").
// Usage: node openai_api_client.mjs <base_url> <npm_dir>   (npm_dir holds node_modules/openai)
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const [, , baseURL, npmDir] = process.argv;
const require = createRequire(npmDir.endsWith('/') ? npmDir : npmDir + '/');
const OpenAI = require('openai');
const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 60000 });

const model = 'Qwen/Qwen3-0.6B';
const models = await client.models.list();
assert.deepEqual(models.data.map((m) => m.id), [model]);

// A list of prompts, n = 2: choices at prompt * n + choice, usage summed.
const batch = await client.completions.create({ model, prompt: ['Hello', 'Good morning', 'Hi'], n: 2, max_tokens: 3 });
assert.equal(batch.choices.length, 6);
batch.choices.forEach((c, i) => assert.equal(c.index, i));
assert.equal(batch.usage.completion_tokens, 18);

// Chat, not streamed: the think block in reasoning_content, the answer in content.
const messages = [{ role: 'user', content: 'Hi' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 100 });
assert.equal(chat.choices[0].message.reasoning_content, '\nThe user greets me.\n');
assert.equal(chat.choices[0].message.content, '\n\nHello! I am fine.');
assert.equal(chat.choices[0].finish_reason, 'stop');

// Streamed, with chat_template_kwargs passed through as an extra body field.
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 100, stream: true, chat_template_kwargs: { enable_thinking: true },
});
let reasoning = '';
let content = '';
for await (const chunk of stream) {
  const delta = chunk.choices[0]?.delta ?? {};
  reasoning += delta.reasoning_content ?? '';
  content += delta.content ?? '';
}
assert.equal(reasoning, '\nThe user greets me.\n');
assert.equal(content, '\n\nHello! I am fine.');

// An unknown model is the client's NotFoundError.
await assert.rejects(client.chat.completions.create({ model: 'nope', messages }), (e) => e.status === 404);
console.log('openai api client: ok');
