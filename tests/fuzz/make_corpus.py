#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/: a few small valid inputs per target (the
binary ones, frames and files, are easier to keep right as code). Run from anywhere; it overwrites the
seeds it names and leaves other files (regression inputs added by hand) alone."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
REPO = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, payload):  # length-delimited protobuf field
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def frame(envelope):
    return struct.pack(">I", len(envelope)) + envelope


# HTTP requests as clients send them to the frontend.
body = json.dumps({"model": "m", "prompt": "Hello", "max_tokens": 8, "stream": True})
put("http_request_fuzz", "post_completions",
    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(body)}\r\n\r\n{body}")
put("http_request_fuzz", "get_pipelined",
    "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
put("http_request_fuzz", "chunked",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
put("http_request_fuzz", "too_large", "POST /v1/completions HTTP/1.1\r\nContent-Length: 99999\r\n\r\nx")

# OpenAI bodies: the first byte picks the route (even: completions, odd: chat).
put("openai_request_fuzz", "completion",
    b"\x00" + json.dumps({"model": "m", "prompt": "Hi", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
                          "top_k": 20, "stop": ["\n", "END"], "stream": True,
                          "stream_options": {"include_usage": True, "continuous_usage_stats": True},
                          "logprobs": 2, "seed": 5, "ignore_eos": False}).encode())
put("openai_request_fuzz", "completion_ids",
    b"\x00" + json.dumps({"prompt": [1, 2, 3], "max_tokens": 4, "min_tokens": 1, "stop_token_ids": [7],
                          "repetition_penalty": 1.1, "min_p": 0.05, "return_token_ids": True}).encode())
put("openai_request_fuzz", "chat",
    b"\x01" + json.dumps({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                          "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 3,
                          "presence_penalty": 0.5, "frequency_penalty": 0.1, "n": 1,
                          "skip_special_tokens": False, "add_generation_prompt": True}).encode())

put("openai_request_fuzz", "chat_tools",
    b"\x01" + json.dumps({"messages": [{"role": "user", "content": "Weather?"},
                                       {"role": "assistant", "content": None, "tool_calls": [
                                           {"id": "call_1", "type": "function",
                                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                                       {"role": "tool", "tool_call_id": "call_1", "content": "21C"}],
                          "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                          "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                          "parallel_tool_calls": False}).encode())

# Model replies to the tool-call parsers: first byte odd hermes, even llama3_json; second the piece size.
put("tool_call_parser_fuzz", "hermes_two_calls",
    b"\x01\x03<think>x</think>\n\n<tool_call>\n" + b'{"name": "get_weather", "arguments": {"city": "Paris"}}'
    + b"\n</tool_call>\n<tool_call>" + b'{"name": "now"}' + b"</tool_call>")
put("tool_call_parser_fuzz", "hermes_malformed", b"\x01\x05Let me check. <tool_call>{\"name\": get}</tool_call> <tool_c")
put("tool_call_parser_fuzz", "llama_two_calls",
    b"\x00\x04<|python_tag|>" + b'{"name": "f", "parameters": {"a": "}{;"}}; {"name": "g", "arguments": {}}')
put("tool_call_parser_fuzz", "llama_text", b"\x00\x01  {\"name\": 1} trailing")

# Streamed responses as the bench client reads them; the first byte picks the read size.
chunk1 = 'data: {"choices":[{"text":"Hi"}]}\n\n'
chunk2 = 'data: [DONE]\n\n'
put("sse_stream_fuzz", "chunked",
    "\x07HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    f"{len(chunk1):x}\r\n{chunk1}\r\n{len(chunk2):x}\r\n{chunk2}\r\n0\r\n\r\n")
put("sse_stream_fuzz", "content_length",
    f"\x03HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(chunk1 + chunk2)}\r\n\r\n"
    + chunk1 + ": comment\r\nevent: x\r\n" + chunk2)
put("sse_stream_fuzz", "until_close",
    "\x40HTTP/1.0 200 OK\r\nConnection: close\r\n\r\ndata: a\ndata: b\n\ndata: open")
put("sse_stream_fuzz", "error_400",
    '\x10HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"error":"bad"}')

# Tokenizer text: ASCII, CJK, emoji, special tokens, invalid UTF-8.
put("tokenizer_fuzz", "ascii", "Hello, world! 123  spaces\tand\nnewlines")
put("tokenizer_fuzz", "unicode", "日本語のテキスト 🙂 café naïve Ωμέγα")
put("tokenizer_fuzz", "special", "<|im_start|>user\nHi<|im_end|>\n<|endoftext|><think>x</think>")
put("tokenizer_fuzz", "invalid_utf8", b"ok \xff\xfe \xc3 \xe2\x82 \xf0\x9f\x99 \xed\xa0\x80 end")

# Chat templates: even first byte = template text, odd = JSON messages for Qwen3's template.
put("chat_template_fuzz", "template_loop",
    "\x00{% for m in messages %}{{ '<|' + m['role'] + '|>' }}{{ m['content'] | trim }}{% if not loop.last %}\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
put("chat_template_fuzz", "template_macro",
    "\x00{%- macro f(x, y=2) -%}{{ x ~ y }}{%- endmacro -%}{% set ns = namespace(n=0) %}"
    "{% for t in tools %}{% set ns.n = ns.n + 1 %}{{ t | tojson }}{% endfor %}{{ f(ns.n) }}"
    "{{ messages[1:] | length }}{{ 'a,b' .split(',') | join('-') }}{{ strftime_now('%Y') }}"
    "{% if bos_token is defined %}{{ bos_token }}{% endif %}{{ raise_exception('no') if false }}")
put("chat_template_fuzz", "messages",
    "\x03" + json.dumps([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "<think>\nx\n</think>\n\nHello"},
                         {"role": "user", "content": "Again"}]))
put("chat_template_fuzz", "tools",
    "\x01" + json.dumps({"messages": [{"role": "user", "content": "Weather?"},
                                      {"role": "assistant", "content": "",
                                       "tool_calls": [{"function": {"name": "w", "arguments": {"c": "P"}}}]},
                                      {"role": "tool", "content": "sunny"}],
                         "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}]}))

# config.json: the test models' real ones.
for model in ("qwen3_gqa", "llama_mqa_tied_bf16"):
    with open(os.path.join(REPO, "tests/data/models", model, "config.json"), "rb") as f:
        put("model_config_fuzz", model, f.read())


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


put("safetensors_fuzz", "two_tensors",
    safetensors({"a": ("F32", [2, 2], bytes(16)), "b.weight": ("BF16", [3], bytes(6))}, {"format": "pt"}))
put("safetensors_fuzz", "scalar_and_empty", safetensors({"s": ("F16", [], bytes(2)), "e": ("I32", [0, 4], b"")}))
put("safetensors_fuzz", "unsupported_dtype", safetensors({"x": ("F8_E4M3", [4], bytes(4))}))

# Request-plane frames: Envelope{abort}, Envelope{drain}, Envelope{remote_prefill} back to back, and
# a frame cut short.
abort = field(5, field(1, b"r1"))
drain = field(9, field(1, b"w1"))
ids = b"".join(varint(i) for i in (1, 2, 300))
prefill = field(7, field(1, b"r2") + field(2, ids) + field(4, b"127.0.0.1:5") + field(5, varint(0) + varint(1)))
hello = field(10, field(1, b"f1"))
put("rpc_frames_fuzz", "abort_drain", frame(abort) + frame(drain))
put("rpc_frames_fuzz", "remote_prefill", frame(prefill) + frame(hello))
put("rpc_frames_fuzz", "truncated", frame(abort)[:5])
put("rpc_frames_fuzz", "empty_envelope", frame(b""))

# KV transfer frames (all big-endian): push TKV1 [id_len, num_blocks, block_bytes:u64] id then per
# block [layer, block] and block_bytes bytes; claim TKC1 [id_len, n] id blocks; release TKR1 [id_len] id.
# The fuzz receiver's memory has 64-byte blocks and expects transfer "fuzz" into blocks 0-3.
def push(tid, records, block_bytes=64):
    out = struct.pack(">IIIQ", 0x544B5631, len(tid), len(records), block_bytes) + tid
    for layer, block in records:
        out += struct.pack(">ii", layer, block) + bytes(range(block_bytes % 256))[:block_bytes].ljust(block_bytes, b"\1")
    return out


put("kv_transfer_fuzz", "push", push(b"fuzz", [(0, 0), (1, 3)]))
put("kv_transfer_fuzz", "push_wrong_geometry", push(b"fuzz", [(0, 1)], block_bytes=8))
put("kv_transfer_fuzz", "claim_release",
    struct.pack(">III", 0x544B4331, 4, 2) + b"fuzz" + struct.pack(">ii", 0, 1)
    + struct.pack(">II", 0x544B5231, 4) + b"fuzz")
put("kv_transfer_fuzz", "bad_magic", b"XXXX" + bytes(12))

# Cluster handshake frames: "TCA1" | type | body. First byte even: the dialer's bytes to the acceptor
# (hello, then response); odd: the acceptor's challenge to the dialer.
def handshake(kind, body):
    return struct.pack(">IB", 0x54434131, kind) + body


put("cluster_handshake_fuzz", "hello_response", b"\0" + handshake(1, bytes(32)) + handshake(3, bytes(range(32))))
put("cluster_handshake_fuzz", "challenge", b"\1" + handshake(2, bytes(range(64))))
put("cluster_handshake_fuzz", "wrong_type", b"\0" + handshake(2, bytes(64)))
put("cluster_handshake_fuzz", "rpc_frame", b"\0" + struct.pack(">I", 2) + b"\x0a\x00")

# etcd gateway answers: the first byte picks the call (0 range, 1 grant, 2 keepalive, 3 put, 4 watch).
def http_answer(body, status="200 OK", chunked=False):
    if chunked:
        return (f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n{body}\r\n0\r\n\r\n")
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"


kv = {"key": "L3RhbmRlbS9kZWZhdWx0L2s=", "value": "eyJhIjoxfQ==", "mod_revision": "5", "lease": "7"}
put("etcd_response_fuzz", "range", "\x00" + http_answer(json.dumps({"header": {"revision": "9"}, "kvs": [kv], "count": "1"})))
put("etcd_response_fuzz", "grant", "\x01" + http_answer(json.dumps({"ID": "7", "TTL": "10"})))
put("etcd_response_fuzz", "keepalive", "\x02" + http_answer(json.dumps({"result": {"ID": "7", "TTL": "9"}}), chunked=True))
put("etcd_response_fuzz", "not_found",
    "\x03" + http_answer(json.dumps({"error": "lease not found", "code": 5, "message": "lease not found"}), "404 Not Found"))
watch = "\n".join(json.dumps(m) for m in (
    {"result": {"header": {"revision": "9"}, "created": True}},
    {"result": {"events": [{"kv": kv}, {"type": "DELETE", "kv": {"key": kv["key"]}}]}},
    {"result": {"canceled": True, "compact_revision": "3"}})) + "\n"
put("etcd_response_fuzz", "watch", "\x04" + http_answer(watch, chunked=True))

# Structured-output constraints: the first byte picks the rest's kind (0 regex, 1 JSON schema, 2 spec).
put("structured_spec_fuzz", "regex", b"\x00" + rb"^[a-z.]{1,20}@(x|yz)*\d+\.(com|org)$")
put("structured_spec_fuzz", "schema",
    b"\x01" + json.dumps({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"}, "note": {"anyOf": [{"type": "null"}, {"type": "number"}]}},
        "required": ["name"], "additionalProperties": False}).encode())
put("structured_spec_fuzz", "schema_refs",
    b"\x01" + json.dumps({"$defs": {"p": {"type": "object", "properties": {"x": {"type": "boolean"}}}},
                          "type": "array", "items": {"$ref": "#/$defs/p"}, "minItems": 1}).encode())
put("structured_spec_fuzz", "spec_tool_calls",
    b"\x02" + json.dumps({"sequence": [{"literal": "<tool_call>"}, {"json_object": True}, {"literal": "</tool_call>"},
                                       {"repeat": {"choice": ["x", "y"]}, "min": 0, "max": 2}]}).encode())

# Prefill-queue payloads (an Envelope holding a RemotePrefill) for a worker with 16-token blocks, 2 layers
# of 4096-byte blocks, fp32 KV: one matching it (20 prompt tokens, 1 cached block of 2), one that does not.
def int_field(number, value):  # varint protobuf field
    return varint(number << 3) + varint(value)


prompt = b"".join(varint(i) for i in range(1, 21))
queued = field(7, field(1, b"q1") + field(2, prompt) + field(4, b"127.0.0.1:6") + field(5, varint(7) + varint(8)) +
               int_field(6, 16) + int_field(7, 16) + int_field(8, 4096) + int_field(9, 2) + field(10, b"d1") +
               field(11, b"127.0.0.1:7") + field(13, b"fp32"))
put("prefill_queue_message_fuzz", "matching", queued)
put("prefill_queue_message_fuzz", "other_geometry",
    field(7, field(1, b"q2") + field(2, prompt) + field(5, varint(1)) + int_field(7, 32) + int_field(9, 2)))
