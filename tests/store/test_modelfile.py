"""Modelfiles: Ollama's grammar and errors, writing back, and turning one into an /api/create request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbllm.errors import InvalidOption, InvalidRequest
from nbllm.remote.modelfile_request import model_files, prepare_create, relative_names
from nbllm.store.digest import digest_file
from nbllm.store.modelfile import Command, Modelfile, parse_modelfile, quote_value

FULL = '''# a comment
FROM llama3.2:1b
  # an indented comment
parameter temperature 0.7
PARAMETER num_ctx 4096
PARAMETER stop "<|start_header_id|>"
PARAMETER stop <|eot_id|>
Template """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}"""
system You are Mario from Super Mario Bros.
MESSAGE user Is Toronto in Canada?
MESSAGE assistant """yes,
it is"""
LICENSE """MIT
License"""
LICENSE second license
ADAPTER ./lora.gguf
REQUIRES 0.14.0
'''


def triples(mf: Modelfile) -> list[tuple[str, str, str]]:
    return [(c.instruction, c.key, c.value) for c in mf.commands]


def test_parses_every_instruction() -> None:
    mf = parse_modelfile(FULL)
    assert triples(mf) == [
        ("from", "", "llama3.2:1b"),
        ("parameter", "temperature", "0.7"),
        ("parameter", "num_ctx", "4096"),
        ("parameter", "stop", "<|start_header_id|>"),
        ("parameter", "stop", "<|eot_id|>"),
        (
            "template",
            "",
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}",
        ),
        ("system", "", "You are Mario from Super Mario Bros."),
        ("message", "user", "Is Toronto in Canada?"),
        ("message", "assistant", "yes,\nit is"),
        ("license", "", "MIT\nLicense"),
        ("license", "", "second license"),
        ("adapter", "", "./lora.gguf"),
        ("requires", "", "0.14.0"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM x\nSYSTEM   padded value   \n", ("system", "", "padded value")),
        ('FROM x\nSYSTEM "  kept spaces  "\n', ("system", "", "  kept spaces  ")),
        ('FROM x\nSYSTEM """ kept "quotes" """', ("system", "", ' kept "quotes" ')),
        ("FROM x\r\nSYSTEM windows\r\n", ("system", "", "windows")),
        ("\ufeffFROM x\nSYSTEM bom", ("system", "", "bom")),
        ("FROM x\nSYSTEM tab\tinside", ("system", "", "tab\tinside")),
        ("FROM x\nPARAMETER num_predict 42 # not a comment", ("parameter", "num_predict", "42 # not a comment")),
        ('FROM x\nTEMPLATE """\n"""', ("template", "", "\n")),
    ],
)
def test_values(text: str, expected: tuple[str, str, str]) -> None:
    assert triples(parse_modelfile(text))[-1] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SYSTEM hi\n", "no FROM line"),
        ("", "no FROM line"),
        ("# only a comment\n", "no FROM line"),
        (
            "FROM x\nFOO bar\n",
            '(line 2): command must be one of "from", "license", "template", "system", "adapter", '
            '"draft", "renderer", "parser", "parameter", "message", or "requires"',
        ),
        ("FROM x\nSYSTEM\n", "(line 3): command must be one of"),  # Ollama counts the newline first
        ("FROM x\nF0M y\n", "(line 2): command must be one of"),
        ("FROM x\nMESSAGE robot hello\n", '(line 2): message role must be one of "system", "user", or "assistant"'),
        ("FROM x\nMESSAGE User hello\n", "(line 2): message role must be one of"),
        ('FROM x\nSYSTEM """never closed\n', "unexpected EOF"),
        ('FROM x\nSYSTEM "never closed', "unexpected EOF"),
        ("FROM x\nPARAMETER temperature", "unexpected EOF"),
        ("FROM x\nPARAMETER temp-erature 1", "unexpected EOF"),
    ],
)
def test_errors_as_ollama_words_them(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_modelfile(text)
    assert info.value.message.startswith(message)


def test_instructions_are_case_insensitive_parameter_names_are_not() -> None:
    mf = parse_modelfile("from a\nPaRaMeTeR Top_K 5\nsYsTeM s")
    assert triples(mf) == [("from", "", "a"), ("parameter", "Top_K", "5"), ("system", "", "s")]


@pytest.mark.parametrize(
    "value",
    ["plain", "two words", "  leading", "trailing  ", "multi\nline", 'with "quotes"', 'multi\n"quoted"\nlines', '"x'],
)
def test_writing_back_round_trips(value: str) -> None:
    mf = Modelfile(
        (
            Command("from", "base"),
            Command("system", value),
            Command("parameter", value, "stop"),
            Command("message", value, "assistant"),
            Command("license", value),
        )
    )
    assert parse_modelfile(mf.render()) == mf


def test_quote_value_keeps_simple_values_bare() -> None:
    assert quote_value("0.7") == "0.7"
    assert quote_value("") == '""'
    assert parse_modelfile(f"FROM x\nSYSTEM {quote_value('')}").commands[-1].value == ""


# ── Modelfile → CreateRequest ───────────────────────────────────────────────────────────────


class Uploads:
    """Records what would be uploaded; returns the real digest."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> str:
        self.paths.append(path)
        return digest_file(path)


def test_request_from_a_model_name_with_every_field() -> None:
    up = Uploads()
    text = FULL.replace("ADAPTER ./lora.gguf\n", "")
    prepared = prepare_create(
        parse_modelfile(text), base_dir=Path("/nonexistent"), upload=up, model="m", quantize="q8_0"
    )
    req = prepared.request
    assert up.paths == [] and req.files is None
    assert req.model == "m" and req.from_ == "llama3.2:1b" and req.quantize == "q8_0"
    assert req.parameters == {"temperature": 0.7, "num_ctx": 4096, "stop": ["<|start_header_id|>", "<|eot_id|>"]}
    assert req.system == "You are Mario from Super Mario Bros." and req.template and req.template.startswith("{{ if")
    assert [(m.role, m.content) for m in req.messages or []] == [
        ("user", "Is Toronto in Canada?"),
        ("assistant", "yes,\nit is"),
    ]
    assert req.license == ["MIT\nLicense", "second license"] and req.requires == "0.14.0"
    body = json.loads(req.model_dump_json(exclude_none=True, by_alias=True))
    assert body["from"] == "llama3.2:1b" and "from_" not in body


def test_request_from_a_gguf_file_and_an_adapter(tmp_path: Path) -> None:
    (tmp_path / "weights.gguf").write_bytes(b"GGUF model")
    (tmp_path / "lora.gguf").write_bytes(b"GGUF lora")
    up = Uploads()
    mf = parse_modelfile("FROM ./weights.gguf\nADAPTER lora.gguf\n")
    req = prepare_create(mf, base_dir=tmp_path, upload=up, model="m").request
    assert req.files == {"weights.gguf": digest_file(tmp_path / "weights.gguf")}
    assert req.adapters == {"lora.gguf": digest_file(tmp_path / "lora.gguf")}
    assert req.from_ is None and len(up.paths) == 2


def test_request_from_a_model_directory_uploads_only_model_files(tmp_path: Path) -> None:
    d = tmp_path / "Qwen2-1.5B-Instruct"
    (d / "sub").mkdir(parents=True)
    for name in (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "sub/config.json",
        "merges.txt",
        "README.md",
        "chat_template.jinja",
        "optimizer.pt",
    ):
        header = b'{"__metadata__": {}}' if name.endswith(".safetensors") else b""  # weights must look like weights
        (d / name).write_bytes(len(header).to_bytes(8, "little") + header if header else name.encode())
    up = Uploads()
    req = prepare_create(parse_modelfile(f"FROM {d}"), base_dir=tmp_path, upload=up).request
    assert sorted(req.files or {}) == [
        "chat_template.jinja",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "sub/config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (req.files or {})["config.json"] == digest_file(d / "config.json")


def test_request_from_a_blob_digest_uploads_nothing() -> None:
    up = Uploads()
    hexd = "ab" * 32
    for form in (f"sha256:{hexd}", f"@sha256:{hexd}", f"sha256-{hexd}"):
        req = prepare_create(parse_modelfile(f"FROM {form}"), base_dir=Path("."), upload=up).request
        assert req.files == {f"sha256-{hexd}": f"sha256:{hexd}"} and req.from_ is None
    assert up.paths == []


def test_home_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    req = prepare_create(parse_modelfile("FROM ~/m.gguf"), base_dir=Path("/"), upload=Uploads()).request
    assert list(req.files or {}) == ["m.gguf"]


def test_deprecated_parameters_warn_and_are_dropped() -> None:
    prepared = prepare_create(parse_modelfile("FROM x\nPARAMETER mirostat 1\n"), base_dir=Path("."), upload=Uploads())
    assert prepared.warnings == ("parameter mirostat is deprecated",) and prepared.request.parameters is None


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("PARAMETER bogus 1", InvalidOption, "unknown parameter 'bogus'"),
        ("PARAMETER num_ctx big", InvalidOption, "num_ctx"),
        ("PARAMETER temperature warm", InvalidOption, "temperature"),
        ("REQUIRES latest", InvalidRequest, "requires must be a valid semver (e.g. 0.14.0)"),
        ("DRAFT ./draft.gguf", InvalidRequest, "DRAFT ./draft.gguf: no such file"),
        ("ADAPTER ./missing.gguf", InvalidRequest, "ADAPTER ./missing.gguf: no such file or directory"),
    ],
)
def test_bad_requests_fail_before_any_upload(tmp_path: Path, line: str, error: type[Exception], message: str) -> None:
    (tmp_path / "big.gguf").write_bytes(b"GGUF")
    up = Uploads()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_create(parse_modelfile(f"FROM ./big.gguf\n{line}\n"), base_dir=tmp_path, upload=up)
    assert up.paths == []


def test_model_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="no Modelfile or safetensors files found"):
        model_files(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="safetensors"):
        model_files(tmp_path)


def test_relative_names() -> None:
    assert relative_names([Path("/a/b/model.gguf")]) == {Path("/a/b/model.gguf"): "model.gguf"}
    names = relative_names([Path("/a/b/x.safetensors"), Path("/a/c/config.json")])
    assert sorted(names.values()) == ["b/x.safetensors", "c/config.json"]
