// Drives tool calling (issue 21) with the official `openai` npm client: chat.completions.create with
// `tools`, whole and streamed, against a server running --tool-call-parser hermes (and the qwen3
// reasoning parser) over a fake engine scripted to think, then call get_weather(city: Paris) and
// search(query: "news today"). The stream is read with the client's own helper, which assembles the
// calls from their deltas the way applications do.
// Usage: node openai_tools_client.mjs <base_url> <npm_dir>   (npm_dir holds node_modules/openai)
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const [, , baseURL, npmDir] = process.argv;
const require = createRequire(npmDir.endsWith('/') ? npmDir : npmDir + '/');
const OpenAI = require('openai');
const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 60000 });

const model = (await client.models.list()).data[0].id;
const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city.',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'search', parameters: { type: 'object', properties: { query: { type: 'string' } } } } },
];
const messages = [{ role: 'user', content: 'Weather in Paris, and the news?' }];

function check(message, finishReason) {
  assert.equal(finishReason, 'tool_calls');
  assert.equal(message.tool_calls.length, 2);
  const [weather, search] = message.tool_calls;
  assert.equal(weather.type, 'function');
  assert.match(weather.id, /^chatcmpl-tool-[0-9a-f]{32}$/);
  assert.equal(weather.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(weather.function.arguments), { city: 'Paris' });
  assert.equal(search.function.name, 'search');
  assert.deepEqual(JSON.parse(search.function.arguments), { query: 'news today' });
  assert.notEqual(weather.id, search.id);
}

// Not streamed.
const chat = await client.chat.completions.create({ model, messages, tools, tool_choice: 'auto', max_tokens: 200 });
check(chat.choices[0].message, chat.choices[0].finish_reason);
assert.equal(chat.choices[0].message.content, null);

// Streamed, assembled by the client's stream helper.
const runner = client.beta.chat.completions.stream({ model, messages, tools, max_tokens: 200 });
const final = await runner.finalChatCompletion();
check(final.choices[0].message, final.choices[0].finish_reason);

// Streamed, read delta by delta: the first delta of a call names it, the later ones carry arguments,
// a few characters at a time as the model writes them.
const stream = await client.chat.completions.create({ model, messages, tools, max_tokens: 200, stream: true });
const calls = [];
for await (const chunk of stream) {
  for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
    if (tc.id) {
      assert.equal(calls[tc.index], undefined);
      calls[tc.index] = { id: tc.id, name: tc.function.name, arguments: tc.function.arguments ?? '', fragments: 0 };
    } else {
      calls[tc.index].arguments += tc.function.arguments;
      calls[tc.index].fragments += 1;
    }
  }
}
assert.deepEqual(calls.map((c) => c.name), ['get_weather', 'search']);
assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris' });
assert.equal(calls[0].arguments, chat.choices[0].message.tool_calls[0].function.arguments);
assert.equal(calls[1].arguments, chat.choices[0].message.tool_calls[1].function.arguments);
assert.ok(calls[0].fragments > 1, `the arguments came in ${calls[0].fragments} fragment(s)`);

// The next turn sends the calls and the tools' results back.
const next = await client.chat.completions.create({
  model, tools, max_tokens: 5,
  messages: [...messages, chat.choices[0].message,
    { role: 'tool', tool_call_id: chat.choices[0].message.tool_calls[0].id, content: '21C' },
    { role: 'tool', tool_call_id: chat.choices[0].message.tool_calls[1].id, content: '[]' }],
});
assert.ok(next.usage.prompt_tokens > chat.usage.prompt_tokens);

// A named function that is not among the tools: the client's BadRequestError.
await assert.rejects(client.chat.completions.create({
  model, messages, tools, tool_choice: { type: 'function', function: { name: 'get_time' } },
}), (e) => e.status === 400 && /get_time/.test(e.message));
console.log('openai tools client: ok');
