"""Rendering chat requests as Ollama's server does: the user's models and Ollama's own vectors.

Sources of the expected strings:
* the three templates the user showed (``ollama show glm4:9b|vicuna:7b|llama3.2:1b --template``):
  outputs derived by hand from Go's text/template rules and Ollama's ``Template.Execute``
  (reasoning in the comments); the llama3.2 tool rendering was also cross-checked with Go's own
  text/template on Go structs shaped like Ollama's template-side types;
* the expected strings in Ollama's ``template/template_test.go``, ``server/prompt_test.go``,
  ``server/routes_generate_test.go`` and ``server/routes_debug_test.go`` (cited per test).
Ollama's ``template/testdata`` and ``server/testdata/tools`` vectors are in test_gotemplate.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from nbllm.errors import TemplateError
from nbllm.prompt.gotemplate import GoTemplate
from nbllm.prompt.ollama_template import (
    collate,
    execute,
    parse_template,
    render_generate,
    render_messages,
)

# The user's templates, verbatim.  `ollama show --template` prints the template and a newline; the
# glm4 and llama3.2 templates end without one (as Ollama's /api/show JSON for them shows).
GLM4 = (
    "[gMASK]<sop>{{ if .System }}<|system|>\n"
    "{{ .System }}{{ end }}{{ if .Prompt }}<|user|>\n"
    "{{ .Prompt }}{{ end }}<|assistant|>\n"
    "{{ .Response }}"
)
VICUNA = "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT:"
LLAMA32 = (
    "<|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "Cutting Knowledge Date: December 2023\n"
    "\n"
    "{{ if .System }}{{ .System }}\n"
    "{{- end }}\n"
    "{{- if .Tools }}When you receive a tool call response, use the output to format an answer to the "
    "orginal user question.\n"
    "\n"
    "You are a helpful assistant with tool calling capabilities.\n"
    "{{- end }}<|eot_id|>\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>\n'
    "{{- if and $.Tools $last }}\n"
    "\n"
    "Given the following functions, please respond with a JSON for a function call with its proper "
    "arguments that best answers the given prompt.\n"
    "\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its '
    "value}. Do not use variables.\n"
    "\n"
    "{{ range $.Tools }}\n"
    "{{- . }}\n"
    "{{ end }}\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- else }}\n"
    "\n"
    "{{ .Content }}<|eot_id|>\n"
    "{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "{{ end }}\n"
    '{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>\n'
    "{{- if .ToolCalls }}\n"
    "{{ range .ToolCalls }}\n"
    '{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}\n'
    "{{- else }}\n"
    "\n"
    "{{ .Content }}\n"
    "{{- end }}{{ if not $last }}<|eot_id|>{{ end }}\n"
    '{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>\n'
    "\n"
    "{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "{{ end }}\n"
    "{{- end }}\n"
    "{{- end }}"
)


def user(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def assistant(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def system(content: str) -> dict[str, Any]:
    return {"role": "system", "content": content}


def tool_def(name: str, description: str = "", **parameters: Any) -> dict[str, Any]:
    function = {"name": name, "description": description} | ({"parameters": parameters} if parameters else {})
    return {"type": "function", "function": function}


USER = [user("简短回答你是谁？")]
SYSTEM_USER = [system("You are a helpful assistant."), *USER]
MULTI_TURN = [*SYSTEM_USER, assistant("我是一个人工智能助手。"), user("What can you do?")]
WEATHER_PROPERTIES = {
    "location": {"type": "string", "description": "获取天气的地点，例如：旧金山，加利福尼亚"},
    "format": {
        "type": "string",
        "description": "返回天气的格式，例如：'摄氏'或'华氏'",
        "enum": ["摄氏", "华氏"],
    },
}
WEATHER_TOOL = tool_def(
    "get_current_weather",
    "获取某个地点的当前天气",
    type="object",
    properties=WEATHER_PROPERTIES,
    required=["location", "format"],
)
WEATHER_QUESTION = [user("今天巴黎的天气怎么样？")]
WEATHER_ARGS = {"format": "华氏", "location": "巴黎"}
WEATHER_CALL = assistant("", tool_calls=[{"function": {"name": "get_current_weather", "arguments": WEATHER_ARGS}}])
WEATHER_RESULT = {"role": "tool", "content": "22", "tool_name": "get_current_weather"}


# glm4 and vicuna use neither .Messages nor (vicuna) .Response: Ollama renders them turn by turn.
# Each (system, prompt, response) turn before the last runs the whole template; the last runs a
# copy cut right after {{ .Response }} (Ollama first appends {{ .Response }} to vicuna's), and the
# outputs are concatenated.  Missing values are "" (the data is a map with every key set).
GLM_TURN = "[gMASK]<sop>{}<|user|>\n{}<|assistant|>\n"
SYSTEM_TEXT = "You are a helpful assistant."
# llama3.2 ranges over .Messages.  Header: the "{{- ...}}" markers eat the newlines around the
# System and Tools blocks, so "<|eot_id|>" follows the system text directly.  Each user message:
# header, "\n\n", content, "<|eot_id|>"; after the last one the assistant header and "\n\n".
# The system message is in .Messages too, but the template prints nothing for that role; an
# assistant message that is not the last one is closed with <|eot_id|>.
LLAMA_HEAD = "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
LLAMA_USER = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
LLAMA_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
Q1, A1, Q2 = USER[0]["content"], MULTI_TURN[2]["content"], MULTI_TURN[3]["content"]
USER_TEMPLATE_CASES = {
    "glm4 user": (GLM4, USER, GLM_TURN.format("", Q1)),
    "glm4 system+user": (GLM4, SYSTEM_USER, GLM_TURN.format(f"<|system|>\n{SYSTEM_TEXT}", Q1)),
    # turn 1 = (system, first question, first answer) in full; turn 2 = the second question, cut
    "glm4 multi-turn": (
        GLM4,
        MULTI_TURN,
        GLM_TURN.format(f"<|system|>\n{SYSTEM_TEXT}", Q1) + A1 + GLM_TURN.format("", Q2),
    ),
    "vicuna user": (VICUNA, USER, f"\nUSER: {Q1}\nASSISTANT:"),
    "vicuna system+user": (VICUNA, SYSTEM_USER, f"{SYSTEM_TEXT}\nUSER: {Q1}\nASSISTANT:"),
    # the appended {{ .Response }} follows "ASSISTANT:" directly, hence no space before the answer
    "vicuna multi-turn": (
        VICUNA,
        MULTI_TURN,
        f"{SYSTEM_TEXT}\nUSER: {Q1}\nASSISTANT:{A1}\nUSER: {Q2}\nASSISTANT:",
    ),
    "llama3.2 user": (LLAMA32, USER, LLAMA_HEAD + "<|eot_id|>" + LLAMA_USER.format(Q1) + LLAMA_ASSISTANT),
    "llama3.2 system+user": (
        LLAMA32,
        SYSTEM_USER,
        f"{LLAMA_HEAD}{SYSTEM_TEXT}<|eot_id|>{LLAMA_USER.format(Q1)}{LLAMA_ASSISTANT}",
    ),
    "llama3.2 multi-turn": (
        LLAMA32,
        MULTI_TURN,
        f"{LLAMA_HEAD}{SYSTEM_TEXT}<|eot_id|>{LLAMA_USER.format(Q1)}{LLAMA_ASSISTANT}{A1}<|eot_id|>"
        f"{LLAMA_USER.format(Q2)}{LLAMA_ASSISTANT}",
    ),
}


@pytest.mark.parametrize("case", list(USER_TEMPLATE_CASES))
def test_user_templates(case: str) -> None:
    template, messages, expected = USER_TEMPLATE_CASES[case]
    assert render_messages(GoTemplate(template), messages) == expected


# Ollama's tool JSON: templateTool's fields in order (type, function{name, description,
# parameters{type, required, properties}}); the properties map sorted by name (format < location),
# each property as api.ToolProperty (type, description, enum); json.Marshal leaves non-ASCII and
# "'" as they are.
WEATHER_TOOL_JSON = (
    '{"type":"function","function":{"name":"get_current_weather","description":"获取某个地点的当前天气",'
    '"parameters":{"type":"object","required":["location","format"],"properties":{"format":{"type":"string",'
    '"description":"返回天气的格式，例如：\'摄氏\'或\'华氏\'","enum":["摄氏","华氏"]},"location":{"type":"string",'
    '"description":"获取天气的地点，例如：旧金山，加利福尼亚"}}}}}'
)
LLAMA_TOOLS_HEAD = (
    LLAMA_HEAD + "When you receive a tool call response, use the output to format an answer to the orginal user "
    "question.\n\nYou are a helpful assistant with tool calling capabilities.<|eot_id|>"
)


def test_llama32_tools_on_the_last_user_message() -> None:
    # with tools, the last user message gets the instructions, then each tool's JSON followed by
    # "\n" ("{{ range $.Tools }}\n{{- . }}\n{{ end }}"), then "\n" and the question
    expected = (
        LLAMA_TOOLS_HEAD + "<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following functions, please respond with a JSON for a function call with its proper "
        "arguments that best answers the given prompt.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument name and its '
        "value}. Do not use variables.\n\n"
        + WEATHER_TOOL_JSON
        + "\n\n今天巴黎的天气怎么样？<|eot_id|>"
        + LLAMA_ASSISTANT
    )
    assert render_messages(GoTemplate(LLAMA32), WEATHER_QUESTION, tools=[WEATHER_TOOL]) == expected


def test_llama32_tool_call_and_tool_result() -> None:
    # the user message is no longer last, so it is plain; the tool call prints as
    # "\n\n" + {"name": ..., "parameters": <arguments as sorted JSON>}; the tool result is an
    # ipython turn and, being last, is followed by the assistant header
    messages = [*WEATHER_QUESTION, WEATHER_CALL, WEATHER_RESULT]
    expected = (
        LLAMA_TOOLS_HEAD
        + LLAMA_USER.format("今天巴黎的天气怎么样？")
        + LLAMA_ASSISTANT
        + '{"name": "get_current_weather", "parameters": {"format":"华氏","location":"巴黎"}}<|eot_id|>'
        + "<|start_header_id|>ipython<|end_header_id|>\n\n22<|eot_id|>"
        + LLAMA_ASSISTANT
    )
    assert render_messages(GoTemplate(LLAMA32), messages, tools=[WEATHER_TOOL]) == expected


def test_user_templates_through_generate() -> None:
    # /api/generate turns system + prompt into messages and renders them like a chat
    assert render_generate(GoTemplate(GLM4), prompt="Hi", system="Be brief.") == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>\n"
    )
    assert render_generate(GoTemplate(VICUNA), prompt="Hi") == "\nUSER: Hi\nASSISTANT:"
    assert render_generate(GoTemplate(LLAMA32), prompt="Hi", model_system="Be brief.") == (
        LLAMA_HEAD + "Be brief.<|eot_id|>" + LLAMA_USER.format("Hi") + LLAMA_ASSISTANT
    )


# ---- template/template_test.go

FRIEND = [user("Hello friend!"), assistant("Hello human!"), user("What is your name?")]
MISTRAL_LEGACY = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
MISTRAL_MESSAGES = (
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
    '{{- if eq .Role "user" }}{{ .Content }}[/INST] '
    '{{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}\n{{- end }}'
)


@pytest.mark.parametrize("template", [MISTRAL_LEGACY, MISTRAL_LEGACY + "{{ .Response }}", MISTRAL_MESSAGES])
def test_execute_with_messages_mistral(template: str) -> None:
    # TestExecuteWithMessages "mistral" and "mistral system": three templates, same prompt
    tmpl = parse_template(template)
    friend = "Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
    assert execute(tmpl, messages=FRIEND) == "[INST] " + friend
    helpful = [system("You are a helpful assistant!"), *FRIEND]
    assert execute(tmpl, messages=helpful) == "[INST] You are a helpful assistant!\n\n" + friend


@pytest.mark.parametrize(
    "template",
    [
        "[INST] {{ .Prompt }}[/INST] ",
        "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
        '\n{{- range $i, $m := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST] '
        '{{ else if eq .Role "assistant" }}{{ .Content }}{{ end }}\n{{- end }}',
    ],
)
def test_execute_with_messages_continues_last_assistant(template: str) -> None:
    # TestExecuteWithMessages "mistral assistant": a trailing assistant message is left open
    rendered = execute(parse_template(template), messages=[*FRIEND, assistant("My name is Ollama and I")])
    assert (
        rendered == "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
        "\n{{- range $index, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n",
    ],
)
def test_execute_with_messages_chatml(template: str) -> None:
    # TestExecuteWithMessages "chatml"; in the legacy form the last turn is cut after {{ .Response }}
    rendered = execute(parse_template(template), messages=[system("You are a helpful assistant!"), *FRIEND])
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n"
        "<|im_start|>user\nHello friend!<|im_end|>\n"
        "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_execute_with_suffix() -> None:
    # TestExecuteWithSuffix; routes_generate_test.go "prompt with suffix" / "prompt without suffix"
    tmpl = parse_template(
        "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    )
    assert execute(tmpl, messages=[user("hello")]) == "hello"
    assert execute(tmpl, prompt="def add(", suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    assert render_generate(tmpl, prompt="def add(", suffix="    return c") == "<PRE> def add( <SUF>    return c <MID>"
    assert render_generate(tmpl, prompt="def add(") == "def add("


def test_collate() -> None:
    # TestCollate: same-role neighbours merge (tool messages do not); all system texts are joined
    weather = {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    temperature = {"role": "tool", "content": "72F", "tool_name": "get_temperature"}
    messages = [
        system("You are helpful"),
        user("Hello"),
        user("How are you?"),
        weather,
        temperature,
        system("Be brief"),
    ]
    joined, merged = collate(messages)
    assert joined == "You are helpful\n\nBe brief"
    assert merged == [
        system("You are helpful"),
        user("Hello\n\nHow are you?"),
        weather,
        temperature,
        system("Be brief"),
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ .Prompt }}", {"prompt", "response"}),
        ("{{ .System }} {{ .Prompt }} {{ .Response }}", {"prompt", "response", "system"}),
        (
            "{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
            {"prompt", "response", "system", "tools"},
        ),
        ("{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}", {"content", "messages", "role"}),
        (
            '{{ range .Messages }}{{ if eq .Role "tool" }}{{ .ToolName }} {{ .Content }}{{ end }}{{ end }}',
            {"content", "messages", "role", "toolname"},
        ),
    ],
)
def test_parse_vars(template: str, expected: set[str]) -> None:
    # TestParse: Vars() of the parsed template, including the {{ .Response }} that Parse appends
    assert parse_template(template).vars() == expected


def test_parse_errors() -> None:
    # TestParseError
    with pytest.raises(TemplateError, match="unclosed action"):
        parse_template("{{ .Prompt ")
    with pytest.raises(TemplateError, match="undefined template specified"):
        parse_template('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}')


TOOL_CALL = assistant(
    "", tool_calls=[{"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Tokyo"}}}]
)


def test_tool_call_arguments_print_as_json_and_range() -> None:
    # TestTemplateArgumentsJSON and TestTemplateArgumentsRange (map keys come out sorted)
    calls = "{{- range .Messages }}{{- range .ToolCalls }}{}{{- end }}{{- end }}"
    printed = parse_template(calls.replace("{}", "{{ .Function.Arguments }}"))
    assert execute(printed, messages=[TOOL_CALL]) == '{"city":"Tokyo","unit":"c"}'
    ranged = parse_template(
        calls.replace("{}", "{{- range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{- end }}")
    )
    assert execute(ranged, messages=[TOOL_CALL]) == "city=Tokyo;unit=c;"


def test_tool_properties_print_as_json_and_range() -> None:
    # TestTemplatePropertiesJSON and TestTemplatePropertiesRange
    tool = tool_def("get_weather", type="object", properties={"location": {"type": "string", "description": "City"}})
    tools = "{{- range .Messages }}{{- end }}{{- range .Tools }}{}{{- end }}"
    printed = parse_template(tools.replace("{}", "{{ .Function.Parameters.Properties }}"))
    assert execute(printed, tools=[tool]) == '{"location":{"type":"string","description":"City"}}'
    ranged = "{{- range $name, $prop := .Function.Parameters.Properties }}{{ $name }}:{{ $prop.Type }};{{- end }}"
    assert execute(parse_template(tools.replace("{}", ranged)), tools=[tool]) == "location:string;"


def test_to_typescript_type() -> None:
    properties = {
        "a": {"type": "integer"},
        "b": {"type": ["string", "null"]},
        "c": {"anyOf": [{"type": "array"}, {"type": "object"}]},
        "d": {},
    }
    template = parse_template(
        "{{ range .Messages }}{{ end }}{{ range .Tools }}"
        "{{ range $k, $v := .Function.Parameters.Properties }}"
        "{{ $k }}: {{ toTypeScriptType $v }}; {{ end }}{{ end }}"
    )
    rendered = execute(template, tools=[tool_def("f", type="object", properties=properties)])
    assert rendered == "a: number; b: string | null; c: any[] | Record<string, any>; d: any; "


# ---- server/prompt_test.go TestChatPrompt (the cases without truncation)

HARRY_TEMPLATE = (
    "\n{{- if .System }}{{ .System }} {{ end }}\n{{- if .Prompt }}{{ .Prompt }} {{ end }}\n"
    "{{- if .Response }}{{ .Response }} {{ end }}"
)
HARRY, WHAT, WAGER = (
    "You're a test, Harry!",
    "I-I'm a what?",
    "A test. And a thumping good one at that, I'd wager.",
)
LIVED = "You are the Test Who Lived."
CHAT_PROMPT_CASES = {
    "messages": ([user(HARRY), assistant(WHAT), user(WAGER)], f"{HARRY} {WHAT} {WAGER} "),
    "messages with images": (
        [user(HARRY, images=[b"something"]), assistant(WHAT), user(WAGER, images=[b"somethingelse"])],
        f"[img-0]{HARRY} {WHAT} [img-1]{WAGER} ",
    ),
    "message with image tag": (
        [
            user(HARRY + " [img]", images=[b"something"]),
            assistant(WHAT),
            user(WAGER, images=[b"somethingelse"]),
        ],
        f"{HARRY} [img-0] {WHAT} [img-1]{WAGER} ",
    ),
    "messages with interleaved images": (
        [user(HARRY), user("", images=[b"a"]), user("", images=[b"b"]), assistant(WHAT), user(WAGER)],
        f"{HARRY}\n\n[img-0]\n\n[img-1] {WHAT} {WAGER} ",
    ),
    "message with system prompt": (
        [system(LIVED), user(HARRY), assistant(WHAT), user(WAGER)],
        f"{LIVED} {HARRY} {WHAT} {WAGER} ",
    ),
    "out of order system": (
        [user(HARRY), assistant(WHAT), system(LIVED), user(WAGER)],
        f"{HARRY} {WHAT} {LIVED} {WAGER} ",
    ),
    "multiple images same prompt": (
        [user("Compare these two pictures of hotdogs", images=[b"one hotdog", b"two hotdogs"])],
        "[img-0][img-1]Compare these two pictures of hotdogs ",
    ),
}


@pytest.mark.parametrize("case", list(CHAT_PROMPT_CASES))
def test_chat_prompt(case: str) -> None:
    messages, expected = CHAT_PROMPT_CASES[case]
    assert render_messages(parse_template(HARRY_TEMPLATE), messages, think=False) == expected


# ---- server/routes_generate_test.go and routes_debug_test.go (expected prompts)

MODEL_SYSTEM = "You are a helpful assistant."
MAGIC = "You can perform magic tricks."


def test_chat_route_prompts() -> None:
    tmpl = parse_template(
        "\n{{- if .Tools }}\n{{ .Tools }}\n{{ end }}\n{{- range .Messages }}\n{{- .Role }}: {{ .Content }}\n"
        '{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}\n'
        "{{- end }}\n{{ end }}"
    )
    hello = [user("Hello!")]
    assert render_messages(tmpl, hello) == "user: Hello!\n"
    # the model's SYSTEM goes first unless the request starts with a system message of its own
    assert render_messages(tmpl, hello, model_system=MODEL_SYSTEM) == f"system: {MODEL_SYSTEM}\nuser: Hello!\n"
    assert render_messages(tmpl, [system(MAGIC), *hello], model_system=MODEL_SYSTEM) == (
        f"system: {MAGIC}\nuser: Hello!\n"
    )
    interleaved = [
        *hello,
        assistant("I can help you with that."),
        system(MAGIC),
        user("Help me write tests."),
    ]
    assert render_messages(tmpl, interleaved, model_system=MODEL_SYSTEM) == (
        f"system: {MODEL_SYSTEM}\nuser: Hello!\nassistant: I can help you with that.\n"
        f"system: {MAGIC}\nuser: Help me write tests.\n"
    )


def test_chat_debug_render() -> None:
    tmpl = parse_template(
        "{{ if .Tools }}{{ .Tools }}{{ end }}{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}"
    )
    image = [user("What's in this image?", images=["ZmFrZS1pbWFnZS1kYXRh"])]  # base64, as in the JSON API
    assert render_messages(tmpl, image) == "user: [img-0]What's in this image?\n"
    tool = tool_def("get_weather", "Get weather information")
    assert render_messages(tmpl, [user("Get the weather")], tools=[tool]) == (
        '[{"type":"function","function":{"name":"get_weather","description":"Get weather information",'
        '"parameters":{"type":"","properties":null}}}]user: Get the weather\n'
    )


def test_generate_route_prompts() -> None:
    tmpl = parse_template(
        "\n{{- if .System }}System: {{ .System }} {{ end }}\n{{- if .Prompt }}User: {{ .Prompt }} {{ end }}\n"
        "{{- if .Response }}Assistant: {{ .Response }} {{ end }}\n"
    )
    assert render_generate(tmpl, prompt="Hello!") == "User: Hello! "
    assert render_generate(tmpl, prompt="Hello!", model_system=MODEL_SYSTEM) == f"System: {MODEL_SYSTEM} User: Hello! "
    with_system = render_generate(tmpl, prompt="Hello!", system=MAGIC, model_system=MODEL_SYSTEM)
    assert with_system == f"System: {MAGIC} User: Hello! "
    debug = parse_template("{{ .Prompt }}")
    assert render_generate(debug, prompt="User question", system="You are a helpful assistant") == "User question"
    assert render_generate(debug, prompt="Describe this", images=[b"fake-image-data"]) == "[img-0]Describe this"


def test_tool_function_prints_as_a_go_struct() -> None:
    # Since Ollama 0.14 templates get templateToolFunction, which has no String(): {{ .Function }}
    # prints Go's struct form, while its Properties map (which has one) prints as JSON.  Ollama's
    # old llama3-groq-tool-use test output (JSON there) predates that change.
    tool = tool_def("f", "d", type="object", required=["a"], properties={"a": {"type": "string"}})
    tmpl = parse_template("{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function }}{{ end }}")
    assert execute(tmpl, tools=[tool]) == '{f d {object <nil> <nil> [a] {"a":{"type":"string"}}}}'


# ---- values, flags and legacy-path details


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "false||false"),
        ({"is_thinking_model": True}, "true|medium|true"),  # thinking models think by default
        ({"think": False, "is_thinking_model": True}, "false||true"),
        ({"think": True}, "true|medium|true"),
        ({"think": "high"}, "true|high|true"),
    ],
)
def test_think_values(options: dict[str, Any], expected: str) -> None:
    tmpl = parse_template("{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}{{ range .Messages }}{{ end }}")
    assert render_messages(tmpl, USER, **options) == expected


def test_tools_value_is_null_without_tools_and_empty_from_generate() -> None:
    # .Prompt is not set on the .Messages path; roles are lower-cased as Ollama decodes them
    tmpl = parse_template("{{ .Tools }}|{{ .Prompt }}|{{ range .Messages }}{{ .Role }}{{ end }}")
    assert render_messages(tmpl, [{"role": "USER", "content": "x"}]) == "null|<no value>|user"
    assert render_generate(tmpl, prompt="x") == "[]|<no value>|user"


def test_merged_messages_keep_the_first_ones_fields() -> None:
    tmpl = parse_template("{{ range .Messages }}{{ .Role }}:{{ .Content }}:{{ len .ToolCalls }};{{ end }}")
    assert render_messages(tmpl, [assistant("a"), {**TOOL_CALL, "content": "b"}]) == "assistant:a\n\nb:0;"


def test_legacy_last_turn_has_no_ollama_functions() -> None:
    # the last turn runs a cut copy of the template that is a new Go template without Ollama's
    # FuncMap: a function before {{ .Response }} fails there; after it, it is cut away
    with pytest.raises(TemplateError, match='"json" is not a defined function'):
        render_messages(parse_template("{{ json .Prompt }}{{ .Response }}"), [user("a")])
    tmpl = parse_template("{{ .Prompt }}{{ .Response }}{{ json .Response }}")
    assert render_messages(tmpl, [user("a"), assistant("b"), user("c")]) == 'ab"b"c'


def test_legacy_cut_inside_if_else_fails_like_ollama() -> None:
    tmpl = parse_template("{{ if .System }}{{ .Response }}{{ else }}{{ .Prompt }}{{ end }}")
    with pytest.raises(TemplateError, match="cannot cut"):
        render_messages(tmpl, USER)
