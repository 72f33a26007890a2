#!/usr/bin/env python3
"""Renders chat templates with python3's jinja2, set up as Hugging Face transformers'
apply_chat_template sets it up (transformers/utils/chat_template_utils.py): an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls, HF's tojson
filter (json.dumps, ensure_ascii=False), raise_exception and strftime_now globals, and the
variables messages, tools, add_generation_prompt, the model's special tokens and extra keys.

Writes tests/data/tokenizer/chat/<name>_cases.json: each case holds its inputs and either the
expected render or the error jinja2 raised (our renderer must fail too). Run from the repository
root after scripts/fetch_data.sh:

    python3 tools/references/chat_template_references.py [DATA_DIR [SUITE...]]

SUITE names the files to write (e.g. qwen3_requests); all when none is given. The *_requests suites
hold OpenAI chat requests (tools, tool calls, tool results) and the prompt their conversation renders
to once converted as vLLM converts it (to_conversation); the frontend must render the same.
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


def snippet_cases():
    """Small templates of their own (case["template"]): Jinja2's whitespace rules for every mix of
    tag kind and -/+ modifier around varied text, and a list of expressions."""
    import random
    rng = random.Random(7)
    texts = ["", " ", "  ", "\n", " \n ", "\n  ", "a", " a ", "\t\n\t", "x\n  ", "\n\n", "  \n", "\r\n", " \r\n  ", "\r"]
    tags = ["{% if true %}I{% endif %}", "{%- if true %}I{% endif %}", "{% if true -%} I {%- endif %}",
            "{%+ if true %}I{% endif +%}", "{% if true %}\nI\n{% endif %}", "{%- if false %}I{% else -%} E {%- endif -%}",
            "{{ 'v' }}", "{{- 'v' }}", "{{ 'v' -}}", "{{- 'v' -}}", "{# c #}", "{#- c -#}", "{#+ c #}",
            "{% set x = 1 %}", "{%- set x = 1 -%}", "{% for i in [1, 2] %}{{ i }}{% endfor %}",
            "{% for i in [1, 2] -%}\n  {{ i }}\n{%- endfor %}", "{% raw %} r {% endraw %}", "{%- raw -%} r {%- endraw -%}",
            "{% macro m() %} M {% endmacro %}{{ m() }}", "{% if false %}A{% elif true %}\n B\n{% endif %}",
            "{%- for i in [1, 2] -%}\n {{ i }}{% if not loop.last %},{% endif %} \n{%- endfor -%}",
            "{%+ for i in [] %}x{% else %}\ne\n{% endfor %}", "{% set y %} blk\n{% endset %}{{ y }}",
            "{%- macro f(a, b=2) -%} {{ a }}{{ b }} {%- endmacro -%}{{ f(1) }}{{ f(3, b=4) }}", "{{ '\\n' }}",
            "  {% if true %}\n    indented\n  {% endif %}\n", "{#- multi\nline\ncomment #}", "{{ 'a' }}{{- ' b ' -}}{{ 'c' }}"]
    cases = []
    for n in range(700):
        parts = [rng.choice(texts)]
        for _ in range(rng.randint(1, 3)):
            parts += [rng.choice(tags), rng.choice(texts)]
        cases.append({"name": f"whitespace/{n}", "template": "".join(parts), "inputs": {"messages": []}})
    expressions = [
        "1 + 2 * 3", "(1 + 2) * 3", "2 ** 3 ** 2", "-2 ** 2", "7 % -3", "-7.5 // 2", "1 / 3", "10 / 5", "3 * 'ab'",
        "[1, 2] + [3]", "'a' ~ 1 ~ 2.5 ~ none ~ true", "1 == 1.0", "1 is number", "true + 1", "'abc' < 'abd'",
        "[1, 2] < [1, 3]", "not 1 == 2", "not (1 and 0)", "0 or '' or 'last'", "1 and 'x'", "none or 5",
        "'x' if none else 'y'", "[][0] is defined", "{'a': 1}.a", "{'a': 1}['a']", "{'a': {'b': [1, 2]}}.a.b[1]",
        "'hello'[1:4]", "'hello'[::-2]", "'hello'[-1]", "[1, 2, 3, 4][1:-1]", "[1, 2, 3][::-1]", "'héllo wörld'[1:8:2]",
        "'  x  '.strip()", "'xxhixx'.strip('x')", "'a,b,c'.split(',', 1)", "'a b  c'.split()", "'a b  c'.split(' ')",
        "'Hello'.lower().upper()", "'hello world'.title()", "'ß'.upper()", "'abc'.replace('b', 'BB')", "'aaa'.replace('a', 'b', 2)",
        "'abc'.startswith('ab')", "'abc'.endswith(('x', 'c'))", "'abcabc'.find('c')", "'abcabc'.count('bc')",
        "', '.join(['a', 'b'])", "'x'.join('abc')", "'line1\\nline2'.splitlines()", "'123'.isdigit()",
        "range(5) | list", "range(2, 10, 3) | list", "range(5, 0, -2) | list", "[3, 1, 2] | sort(reverse=true)",
        "['b', 'a', 'C'] | sort", "['b', 'a', 'C'] | sort(case_sensitive=true)", "[{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | list",
        "[1, 2, 3] | join('-')", "[1, 2, 3] | first", "[1, 2, 3] | last", "'abc' | first", "[] | first is defined",
        "'abc' | list", "{'b': 1, 'a': 2} | list", "{'b': 1, 'a': 2} | dictsort(by='value')", "[1, 2, 3] | length",
        "'héllo' | length", "{'a': 1} | length", "'  trim me  ' | trim", "'xxtrimxx' | trim('x')", "none | string",
        "none | default('d')", "false | default('d')", "false | default('d', true)", "3.7 | int", "'3.7' | int", "'0x1A' | int",
        "'  12 ' | int", "'abc' | int(5)", "2 | float", "'1e3' | float", "-3.5 | abs", "2.675 | round(2)", "2.5 | round",
        "3.14159 | round(3, 'floor')", "[1, 2.5] | sum", "[[1], [2]] | sum(start=[])", "['a', 'B'] | max", "[3, 1] | min",
        "[1, 1, 2, 'a', 'A'] | unique | list", "'Hello World' | wordcount", "'a\\nb\\n\\nc' | indent", "'a\\nb' | indent('> ', true)",
        "'a\\n\\nb' | indent(2, blank=true)", "'<b>&\\'\"' | e", "'x' | safe", "[1, 2, 3, 4] | select('even') | list",
        "[1, 2, 3, 4] | reject('odd') | list", "[1, 2, 3] | select('>', 1) | list", "[1, 2, 3] | select('in', [1, 3]) | list",
        "[{'a': 1}, {'a': 0}] | selectattr('a') | list", "[{'a': 1}, {'b': 0}] | selectattr('a', 'defined') | list",
        "['a', 'b'] | map('upper') | list", "[{'x': {'y': 1}}] | map(attribute='x.y') | list", "[[1, 2]] | map(attribute='0') | list",
        "{'a': 1, 'b': [1, 2]} | tojson", "{'b': 1, 'a': 2} | tojson(sort_keys=true)", "[1, 'x'] | tojson(separators=(',', ':'))",
        "{'nested': {'list': [1, {'k': none}], 'e': {}}} | tojson(indent=3)", "'é\\u2028\\x00\\t\"' | tojson", "1.0 | tojson",
        "1e100 | tojson", "3 is odd", "4 is divisibleby 2", "'abc' is lower", "'ABC' is upper", "none is none", "1 is string",
        "'a' is string", "[] is iterable", "{} is mapping", "[] is sequence", "1 is integer", "1.0 is float", "true is boolean",
        "true is true", "0 is false", "x is undefined", "x is defined", "1 is eq 1", "1 is ne 2", "1 is lt 2", "2 is ge 2",
        "1 is in [1]", "[1] is sameas [1]", "none is sameas none", "'a' in ['a']", "'b' not in {'a': 1}", "'bc' in 'abc'",
        "namespace(a=1).a", "dict(a=1, b=2)", "{'a': 1}.items() | list", "{'a': 1}.keys() | list", "{'a': 1}.values() | list",
        "{'a': 1}.get('b', 'dflt')", "{'a': 1}.get('a')", "{'a': 1}.get('zz')", "[1, [2, (3, 'x')], {'k': 'v'}]", "(1,)", "()",
        "'quote\\'s'", "\"dq \\\\\"", "'\\u00e9\\x41\\101'", "'multi' 'part' \"literal\"", "1_000 + 1", "0.5e1", "12 // 5 * 5",
        "'%d items' | replace('%d', 3 | string)", "messages | length", "undefined_var | length", "undefined_var | list",
        "[1] | tojson(ensure_ascii=true)", "[undefined_var, 1]", "2 ** 62 + (2 ** 62 - 1)", "{'é': '😀 \\\\u x', 'k': ['ü']} | tojson(ensure_ascii=true)", "'ﬁ straße' | upper",
        "'İ' | lower", "'1_000' | int", "'1__0' | int", "' -2.5e1 ' | float", "'nan' | float", "'.5' | float", "'5.' | float", "'e5' | float",
        "'a' ~ undefined_var ~ 'b'", "('x' if false) ~ 'y'", "[none, true, 1.5, 'é\\n']", "{'k': [none]}",
    ]
    for i, e in enumerate(expressions):
        cases.append({"name": f"expr/{i}: {e}", "template": "{{ " + e + " }}", "inputs": {"messages": []}})
    error_expressions = ["x.y", "x[0]", "1 + 'a'", "'a' + none", "x + 1", "none.attr.attr",
                         "1 / 0", "'abc' is divisibleby 0", "x()", "{'a': 1}.pop('a')"]
    for i, e in enumerate(error_expressions):
        cases.append({"name": f"error/{i}: {e}", "template": "{{ " + e + " }}", "inputs": {"messages": []}})
    return cases


def to_conversation(request):
    """What vLLM hands the template for an OpenAI chat request (its chat_utils): string content
    (None as "", text parts joined as Tandem joins them), developer as system, an assistant's
    tool_calls with their JSON-string arguments parsed to objects, a tool message's tool_call_id,
    any message's name; tools as sent, or None with tool_choice "none" (Tandem omits them then)."""
    import copy
    messages = []
    for m in request["messages"]:
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            content = "".join(part["text"] for part in content)
        out = {"role": "system" if m["role"] == "developer" else m["role"], "content": content}
        if isinstance(m.get("name"), str):
            out["name"] = m["name"]
        if m["role"] == "tool" and "tool_call_id" in m:
            out["tool_call_id"] = m["tool_call_id"]
        if m["role"] == "assistant" and m.get("tool_calls") is not None:
            calls = copy.deepcopy(m["tool_calls"])
            for c in calls:
                if isinstance(c["function"].get("arguments"), str):
                    c["function"]["arguments"] = json.loads(c["function"]["arguments"])
            out["tool_calls"] = calls
        messages.append(out)
    tools = request.get("tools") or None
    if request.get("tool_choice") == "none":
        tools = None
    return {"messages": messages, "tools": tools, "add_generation_prompt": request.get("add_generation_prompt", True),
            "extra": request.get("chat_template_kwargs", {})}


def api_call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def request_cases():
    """OpenAI chat requests with tools, tool calls and tool results, as clients send them."""
    weather = api_call("call_1", "get_weather", {"unit": "celsius", "city": "Paris"})
    rome = api_call("call_2", "get_weather", {"city": "Rome"})
    news = api_call("call_3", "search", {"query": "news \"today\"", "limit": 3, "filters": {"z": [1, 2.5], "a": None}})
    round_trip = [U2, {"role": "assistant", "content": None, "tool_calls": [weather]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"}]
    parallel = [SYSTEM, {"role": "user", "content": "Weather in Paris and Rome, and the news?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [weather, rome, news]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": [{"type": "text", "text": "25C"}]},
                {"role": "tool", "tool_call_id": "call_3", "content": "[\"headline\"]"},
                {"role": "assistant", "content": "Paris 18C, Rome 25C."}, {"role": "user", "content": "Thanks! And Oslo?"}]
    odd_tool = {"type": "function", "function": {"parameters": {"type": "object", "required": ["q"], "properties": {
        "q": {"description": "Grüße — \"quoted\"", "type": "string"}}}, "name": "lookup", "description": "Looks up 東京."}}
    return [
        {"name": "tools_single_user", "request": {"messages": [U2], "tools": TOOLS}},
        {"name": "tools_system_user", "request": {"messages": [SYSTEM, U2], "tools": TOOLS, "tool_choice": "auto"}},
        {"name": "tools_required", "request": {"messages": [{"role": "developer", "content": "Use tools."}, U2],
                                               "tools": TOOLS, "tool_choice": "required"}},
        {"name": "tools_named", "request": {"messages": [U2], "tools": TOOLS,
                                            "tool_choice": {"type": "function", "function": {"name": "search"}}}},
        {"name": "tool_choice_none_omits_tools", "request": {"messages": [SYSTEM, U2], "tools": TOOLS, "tool_choice": "none"}},
        {"name": "round_trip", "request": {"messages": round_trip, "tools": TOOLS}},
        {"name": "round_trip_without_tools", "request": {"messages": round_trip}},
        {"name": "parallel_calls_and_results", "request": {"messages": parallel, "tools": TOOLS, "parallel_tool_calls": True}},
        {"name": "no_thinking", "request": {"messages": round_trip, "tools": TOOLS, "chat_template_kwargs": {"enable_thinking": False}}},
        {"name": "tool_key_order", "request": {"messages": [U2], "tools": [odd_tool, WEATHER_TOOL]}},
        {"name": "ends_with_tool_calls", "request": {"messages": [U2, {"role": "assistant", "content": "", "tool_calls": [news]}],
                                                     "tools": TOOLS, "add_generation_prompt": False}},
    ]


def render_requests(template, tokenizer_config):
    cases = []
    for case in request_cases():
        inputs = to_conversation(case["request"])
        for key in ("bos_token", "eos_token"):
            value = tokenizer_config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value:
                inputs[key] = value
        out = {"name": case["name"], "request": case["request"]}
        try:
            out["expected"] = render(template, inputs)
        except jinja2.exceptions.TemplateError as e:
            out["error"] = f"{type(e).__name__}: {e}"
        cases.append(out)
    return cases


def main():
    only = sys.argv[2:]  # suite names to write (default: all)
    for model in ("qwen3", "llama3_1"):
        name = f"{model}_requests"
        if only and name not in only:
            continue
        with open(os.path.join(DATA, "tokenizers", model, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        cases = render_requests(config["chat_template"], config)
        out = {"generator": f"tools/references/chat_template_references.py with jinja2 {jinja2.__version__}",
               "template": f"config:{model}", "now": NOW.isoformat(), "cases": cases}
        with open(os.path.join(OUT, f"{name}_cases.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"{name}: {len(cases)} cases")
    suites = {
        "qwen3": ("config:qwen3", qwen3_cases()),
        "llama3_1": ("config:llama3_1", llama_cases()),
        "llama3_1_tools": ("file:llama3_1_tools.jinja", llama_tools_cases()),
        "constructs": ("file:constructs.jinja", constructs_cases()),
        "snippets": ("inline:", snippet_cases()),
    }
    for name, (source, cases) in suites.items():
        if only and name not in only:
            continue
        kind, ref = source.split(":", 1)
        # Meta's tool-calling Llama-3.1 template is not ours to commit: render its cases only where a
        # copy has been placed beside the other templates by hand.
        if kind == "file" and not os.path.exists(os.path.join(OUT, ref)):
            print(f"skipping {name}: {ref} not present")
            continue
        template = config_template(ref) if kind == "config" else file_template(ref) if kind == "file" else None
        for case in cases:
            try:
                case["expected"] = render(case.get("template", template), case["inputs"])
            except jinja2.exceptions.TemplateError as e:
                case["error"] = f"{type(e).__name__}: {e}"
            except (TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
                case["error"] = f"{type(e).__name__}: {e}"
        out = {"generator": f"tools/references/chat_template_references.py with jinja2 {jinja2.__version__}",
               "template": source, "now": NOW.isoformat(), "cases": cases}
        with open(os.path.join(OUT, f"{name}_cases.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        errors = sum(1 for c in cases if "error" in c)
        print(f"{name}: {len(cases)} cases ({errors} expected errors)")


if __name__ == "__main__":
    main()
