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

# logprobs, legacy shape: one entry per token, top alternatives, offsets; streamed the same.
lp = client.completions.create(prompt="Once upon a time", logprobs=3, **args)
assert lp.choices[0].text == text, lp
L = lp.choices[0].logprobs
# (An end-of-story token has its entry too: it is sampled, though not counted in the usage.)
ended = lp.choices[0].finish_reason == "stop"
assert len(L.tokens) == len(L.token_logprobs) == len(L.top_logprobs) == len(L.text_offset) == r.usage.completion_tokens + ended, L
assert all(len(t) == 3 for t in L.top_logprobs) and all(x <= 0 for x in L.token_logprobs), L
assert all(max(t.values()) >= x - 1e-9 for t, x in zip(L.top_logprobs, L.token_logprobs)), L
streamed = [x for c in client.completions.create(prompt="Once upon a time", logprobs=3, stream=True, **args)
            if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs]
assert streamed == L.token_logprobs, (streamed, L.token_logprobs)

# logprobs, chat shape: the same tokens and values.
cl = client.chat.completions.create(messages=[{"role": "user", "content": "Once upon a time"}], logprobs=True,
                                    top_logprobs=3, **args)
content = cl.choices[0].logprobs.content
assert [c.token for c in content] == L.tokens and [c.logprob for c in content] == L.token_logprobs, content
assert all(len(c.top_logprobs) == 3 and bytes(c.bytes).decode("utf-8", "replace") == c.token for c in content)

# echo with max_tokens=0: the prompt scored, first token None, nothing generated.
story = "Tom had a red ball. He threw it to his dog."
e = client.completions.create(model="flashlm-small", prompt=story, max_tokens=0, echo=True, logprobs=0)
E = e.choices[0]
assert E.text == story and E.logprobs.token_logprobs[0] is None, E
assert len(E.logprobs.tokens) == e.usage.prompt_tokens and e.usage.completion_tokens == 0, e.usage
assert "".join(E.logprobs.tokens) == story, E.logprobs.tokens

# n: independent choices (seed + i), usage over all of them.
n = client.completions.create(prompt="Once upon a time", n=3, **args)
assert [c.index for c in n.choices] == [0, 1, 2] and n.choices[0].text == text, n
assert len({c.text for c in n.choices}) > 1, n
assert n.usage.completion_tokens >= 3, n.usage

# Sampling fields: OpenAI's penalties and logit_bias, llama.cpp's min_p / repetition_penalty.
banned = L.tokens[0]
ids = client.post("/../tokenize", body={"content": banned}, cast_to=object)["tokens"]
b = client.completions.create(prompt="Once upon a time", logprobs=0, logit_bias={str(ids[0]): -100}, **args)
assert banned not in b.choices[0].logprobs.tokens, b.choices[0].logprobs.tokens
pen = client.completions.create(prompt="Once upon a time", presence_penalty=1.5, frequency_penalty=1.0,
                                extra_body={"min_p": 0.05, "repetition_penalty": 1.3}, **args)
assert pen.choices[0].text != text, pen

try:
    client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"},
                                   **args)
    raise SystemExit("response_format json_object was accepted")
except openai.BadRequestError as e:
    assert "no JSON mode" in str(e), e
t = client.chat.completions.create(messages=[{"role": "user", "content": "Once upon a time"}],
                                   response_format={"type": "text"}, **args)
assert t.choices[0].message.content == text, t

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e

print(f"openai {openai.__version__}: models, completion, chat, both streamed, logprobs (both shapes, streamed), "
      "echo, n, penalties, min_p, logit_bias, response_format, 400 and 401 errors ok")
