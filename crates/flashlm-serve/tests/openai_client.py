"""The official `openai` Python package against a running flashlm-serve.

Usage: python3 openai_client.py BASE_URL API_KEY   (run by tests/openai_python.rs)
"""
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
args = dict(model="flashlm-small", max_tokens=24, seed=11, temperature=0.8)

models = client.models.list()
assert [m.id for m in models.data] == ["flashlm-small"], models

r = client.completions.create(prompt="Once upon a time", **args)
text = r.choices[0].text
assert text, r
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.completion_tokens >= 1 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

chat = client.chat.completions.create(messages=[{"role": "user", "content": "Once upon a time"}], **args)
assert chat.choices[0].message.role == "assistant", chat
assert chat.choices[0].message.content == text, (chat, text)

pieces = [c.choices[0].text for c in client.completions.create(prompt="Once upon a time", stream=True, **args) if c.choices]
assert "".join(pieces) == text and len(pieces) > 1, pieces

deltas = []
usage = None
for c in client.chat.completions.create(
    messages=[{"role": "user", "content": "Once upon a time"}], stream=True, stream_options={"include_usage": True}, **args
):
    if c.choices and c.choices[0].delta.content:
        deltas.append(c.choices[0].delta.content)
    if c.usage:
        usage = c.usage
assert "".join(deltas) == text, (deltas, text)
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage

try:
    client.completions.create(model="flashlm-small", prompt="hi", max_tokens=0)
    raise SystemExit("max_tokens=0 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "max_tokens" in str(e), e

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e

print(f"openai {openai.__version__}: models, completion, chat, both streamed, 400 and 401 errors ok")
