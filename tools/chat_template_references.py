#!/usr/bin/env python3
"""Renders chat templates with python3's jinja2, set up as Hugging Face transformers'
apply_chat_template sets it up (transformers/utils/chat_template_utils.py): an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls, HF's tojson
filter (json.dumps, ensure_ascii=False), raise_exception and strftime_now globals, and the
variables messages, tools, add_generation_prompt, the model's special tokens and extra keys.

Writes tests/data/tokenizer/chat/<name>_cases.json: each case holds its inputs and either the
expected render or the error jinja2 raised (our renderer must fail too). Run from the repository
root after scripts/fetch_data.sh:

    python3 tools/chat_template_references.py [DATA_DIR]
"""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

DATA = sys.argv[1] if len(sys.argv) > 1 else "data"
OUT = os.path.join("tests", "data", "tokenizer", "chat")
# The date strftime_now sees; the C++ test injects the same.
NOW = datetime.datetime(2024, 7, 26, 9, 30, 0)


def render(template, inputs):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    kwargs = {"messages": inputs["messages"], "tools": inputs.get("tools"), "documents": None,
              "add_generation_prompt": inputs.get("add_generation_prompt", False)}
    for key in ("bos_token", "eos_token"):
        if inputs.get(key):
            kwargs[key] = inputs[key]
    kwargs.update(inputs.get("extra", {}))
    return env.from_string(template).render(**kwargs)


def config_template(model):
    with open(os.path.join(DATA, "tokenizers", model, "tokenizer_config.json"), encoding="utf-8") as f:
        return json.load(f)["chat_template"]


def file_template(name):
    with open(os.path.join(OUT, name), encoding="utf-8") as f:
        return f.read()


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web — returns top results.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
                   "required": ["query"]}}}


def call(name, arguments, as_string=False):
    return {"id": "call_" + name, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments) if as_string else arguments}}


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello! How are you?"}
A1 = {"role": "assistant", "content": "I'm fine, thanks. How can I help?"}
U2 = {"role": "user", "content": "What's the weather in Paris?"}

base_conversations = {
    "single_user": [U1],
    "system_user": [SYSTEM, U1],
    "multi_turn": [SYSTEM, U1, A1, U2],
    "multi_turn_no_system": [U1, A1, U2],
    "ends_with_assistant": [U1, A1],
    "unicode": [{"role": "user", "content": "Grüße aus München 👋 — 你好，世界！ مرحبا"},
                {"role": "assistant", "content": "こんにちは 🌸"}],
    "whitespace": [{"role": "system", "content": "  padded system  \n"},
                   {"role": "user", "content": "\n\nleading and trailing\n\n"},
                   {"role": "assistant", "content": "\n answer \n"}, {"role": "user", "content": "ok"}],
    "empty_content": [{"role": "user", "content": ""}],
    "reasoning_content": [U1, {"role": "assistant", "content": "Hi there!", "reasoning_content": "The user greets me."}, U2],
    "reasoning_content_last": [U1, {"role": "assistant", "content": "Hi there!", "reasoning_content": "\nThe user greets me.\n"}],
    "think_in_content": [U1, {"role": "assistant", "content": "<think>\nGreeting.\n</think>\n\nHello!"}, U2],
    "think_in_content_last": [U2, {"role": "assistant", "content": "<think>\nCheck weather.\n</think>\n\nIt is sunny."}],
    "tool_call": [U2, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
                  {"role": "tool", "content": "{\"temperature\": 21, \"unit\": \"celsius\"}"}],
    "tool_call_string_arguments": [U2, {"role": "assistant", "content": "Let me check.",
                                        "tool_calls": [call("get_weather", {"city": "Paris", "unit": "celsius"}, True)]},
                                   {"role": "tool", "content": "sunny"},
                                   {"role": "assistant", "content": "It is sunny in Paris."}],
    "parallel_tool_calls": [SYSTEM, {"role": "user", "content": "Weather in Paris and Rome, and news?"},
                            {"role": "assistant", "content": "",
                             "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Rome"}),
                                            call("search", {"query": "news", "limit": 3})]},
                            {"role": "tool", "content": "18C"}, {"role": "tool", "content": "25C"},
                            {"role": "tool", "content": "[\"headline\"]"},
                            {"role": "assistant", "content": "Paris 18C, Rome 25C."}],
    "multi_step_tools": [U2, {"role": "assistant", "content": "<think>\nNeed data.\n</think>\n\n",
                              "tool_calls": [call("search", {"query": "Paris weather"})]},
                         {"role": "tool", "content": "result 1"},
                         {"role": "assistant", "content": "", "reasoning_content": "Need more.",
                          "tool_calls": [call("get_weather", {"city": "Paris"})]},
                         {"role": "tool", "content": "21C"}],
    "tool_response_as_user": [U2, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Paris"})]},
                              {"role": "user", "content": "<tool_response>\n21C\n</tool_response>"}],
    "second_system": [SYSTEM, U1, {"role": "system", "content": "Be brief."}, U2],
}

TOOLS = [WEATHER_TOOL, SEARCH_TOOL]


def qwen3_cases():
    cases = []
    for name, messages in base_conversations.items():
        for agp in (False, True):
            cases.append({"name": f"{name}/agp={agp}", "inputs": {"messages": messages, "add_generation_prompt": agp,
                                                                  "eos_token": "<|im_end|>"}})
        cases.append({"name": f"{name}/tools", "inputs": {"messages": messages, "tools": TOOLS, "add_generation_prompt": True,
                                                          "eos_token": "<|im_end|>"}})
        cases.append({"name": f"{name}/no_thinking", "inputs": {"messages": messages, "add_generation_prompt": True,
                                                                "eos_token": "<|im_end|>", "extra": {"enable_thinking": False}}})
    cases.append({"name": "thinking_true", "inputs": {"messages": [U1], "add_generation_prompt": True, "extra": {"enable_thinking": True}}})
    # jinja2 raises on these (None content; no messages): ours must fail too.
    cases.append({"name": "none_content_tool_call", "inputs": {"messages": [U2, {"role": "assistant", "content": None,
                                                                                 "tool_calls": [call("get_weather", {"city": "Paris"})]}]}})
    cases.append({"name": "no_messages", "inputs": {"messages": []}})
    return cases


def llama_cases():
    cases = []
    for name, messages in base_conversations.items():
        for agp in (False, True):
            cases.append({"name": f"{name}/agp={agp}", "inputs": {"messages": messages, "add_generation_prompt": agp,
                                                                  "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}})
    return cases


def llama_tools_cases():
    plain = {k: v for k, v in base_conversations.items() if not any("tool_calls" in m or m["role"] == "tool" for m in v)}
    cases = []
    for name, messages in plain.items():
        for agp in (False, True):
            cases.append({"name": f"{name}/agp={agp}", "inputs": {"messages": messages, "add_generation_prompt": agp,
                                                                  "bos_token": "<|begin_of_text|>"}})
    tool_turns = [U2, {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Paris", "unit": "celsius"})]},
                  {"role": "tool", "content": {"temperature": 21}}, {"role": "ipython", "content": "plain text result"},
                  {"role": "assistant", "content": "It is 21C."}]
    cases += [
        {"name": "tools_in_user_message", "inputs": {"messages": [SYSTEM] + tool_turns, "tools": TOOLS, "add_generation_prompt": True, "bos_token": "<|begin_of_text|>"}},
        {"name": "tools_in_system", "inputs": {"messages": tool_turns, "tools": TOOLS, "bos_token": "<|begin_of_text|>",
                                               "extra": {"tools_in_user_message": False}}},
        {"name": "builtin_tools", "inputs": {"messages": [SYSTEM, U2, {"role": "assistant", "tool_calls": [call("brave_search", {"query": "weather Paris"})]},
                                                          {"role": "ipython", "content": "sunny"}],
                                             "bos_token": "<|begin_of_text|>", "add_generation_prompt": True,
                                             "extra": {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}}},
        {"name": "date_string", "inputs": {"messages": [U1], "bos_token": "<|begin_of_text|>", "extra": {"date_string": "01 Jan 2025"}}},
        {"name": "custom_tools", "inputs": {"messages": [U1], "bos_token": "<|begin_of_text|>", "extra": {"custom_tools": [WEATHER_TOOL]}}},
        {"name": "two_tool_calls_rejected", "inputs": {"messages": [U2, {"role": "assistant", "tool_calls": [call("a", {}), call("b", {})]}],
                                                       "bos_token": "<|begin_of_text|>"}},
        {"name": "tools_without_user_message", "inputs": {"messages": [SYSTEM], "tools": TOOLS, "bos_token": "<|begin_of_text|>"}},
    ]
    return cases


def constructs_cases():
    cases = []
    for name in ("single_user", "multi_turn", "unicode", "tool_call", "parallel_tool_calls", "whitespace", "ends_with_assistant"):
        cases.append({"name": name, "inputs": {"messages": base_conversations[name]}})
    cases.append({"name": "none_content", "inputs": {"messages": [U1, {"role": "assistant", "content": None, "tool_calls": [call("f", {"b": 1, "a": [2]})]}, U2]}})
    cases.append({"name": "list_content", "inputs": {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}})
    return cases


def main():
    suites = {
        "qwen3": ("config:qwen3", qwen3_cases()),
        "llama3_1": ("config:llama3_1", llama_cases()),
        "llama3_1_tools": ("file:llama3_1_tools.jinja", llama_tools_cases()),
        "constructs": ("file:constructs.jinja", constructs_cases()),
    }
    for name, (source, cases) in suites.items():
        kind, ref = source.split(":", 1)
        template = config_template(ref) if kind == "config" else file_template(ref)
        for case in cases:
            try:
                case["expected"] = render(template, case["inputs"])
            except jinja2.exceptions.TemplateError as e:
                case["error"] = f"{type(e).__name__}: {e}"
            except (TypeError, ValueError) as e:
                case["error"] = f"{type(e).__name__}: {e}"
        out = {"generator": f"tools/chat_template_references.py with jinja2 {jinja2.__version__}",
               "template": source, "now": NOW.isoformat(), "cases": cases}
        with open(os.path.join(OUT, f"{name}_cases.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        errors = sum(1 for c in cases if "error" in c)
        print(f"{name}: {len(cases)} cases ({errors} expected errors)")


if __name__ == "__main__":
    main()
