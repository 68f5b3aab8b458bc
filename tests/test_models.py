"""Model layer: loading (HF dir, adapter), prompt formatting, batched generation, CLI `generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from itaudit.models import generate, generate_ids, load_model, read_prompts
from tests.tinymodels import tiny_causal_lm, tiny_lora_adapter

PROMPTS = ["Name three colours", "What is the capital of France?", "x", "Write a short poem about the sea please"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m")


def test_tiny_model_is_deterministic(tmp_path: Path, tiny: Path) -> None:
    other = tiny_causal_lm(tmp_path / "again")
    assert (other / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_text() == (tiny / "tokenizer.json").read_text()


def test_format_prompt_chat_and_plain(tiny: Path) -> None:
    lm = load_model(str(tiny))
    assert lm.has_chat_template and lm.model_id == str(tiny.resolve())
    text = lm.format_prompt("Hi", input="ctx", system="Be brief",
                            history=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert text == "<|bos|><|system|>Be brief<|eos|>\n<|user|>a<|eos|>\n<|assistant|>b<|eos|>\n<|user|>Hi\n\nctx<|eos|>\n<|assistant|>"
    ids = lm.encode_prompt(text)
    assert ids.count(lm.tokenizer.bos_token_id) == 1  # BOS from the template, not added twice
    lm.use_chat_template = False
    assert lm.format_prompt("Hi") == "### Instruction:\nHi\n\n### Response:\n"
    assert "### Input:\nctx" in lm.format_prompt("Hi", input="ctx")
    lm.plain_template = "Q: {instruction}\nA:"
    assert lm.format_prompt("Hi", history=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "Q: a\nA:b\n\nQ: Hi\nA:"


def test_batched_generation_matches_unbatched(tiny: Path) -> None:
    lm = load_model(str(tiny))
    ctx = [lm.encode_prompt(lm.format_prompt(p)) for p in PROMPTS]
    one = generate_ids(lm, ctx, max_new_tokens=10, batch_size=1, show_progress=False)
    four = generate_ids(lm, ctx, max_new_tokens=10, batch_size=4, show_progress=False)
    assert one == four
    assert all(0 < len(g) <= 10 for g in one)
    # greedy: each generated token is the argmax of the model given the prefix
    with torch.no_grad():
        logits = lm.model(torch.tensor([ctx[0] + one[0]])).logits[0]
    argmax = logits[len(ctx[0]) - 1 : -1].argmax(-1).tolist()
    assert argmax == one[0]
    texts = generate(lm, PROMPTS, max_new_tokens=10, batch_size=3, show_progress=False)
    assert texts == [lm.tokenizer.decode(g, skip_special_tokens=True).strip() for g in one]


def test_adapter_changes_generation_and_zero_adapter_does_not(tmp_path: Path, tiny: Path) -> None:
    base = load_model(str(tiny))
    ref = generate(base, PROMPTS, max_new_tokens=8, show_progress=False)
    lora = load_model(str(tiny), adapter=str(tiny_lora_adapter(tiny, tmp_path / "lora")))
    assert lora.model_id.endswith("+" + str((tmp_path / "lora").resolve()))
    assert generate(lora, PROMPTS, max_new_tokens=8, show_progress=False) != ref
    zero = load_model(str(tiny), adapter=str(tiny_lora_adapter(tiny, tmp_path / "zero", zero=True)), merge=True)
    assert generate(zero, PROMPTS, max_new_tokens=8, show_progress=False) == ref


def test_bad_model_specs(tmp_path: Path) -> None:
    from itaudit.errors import ItauditError

    with pytest.raises(ItauditError, match="unknown model"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ItauditError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_read_prompts_mt_bench_style(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]},
        {"question_id": 82, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]},
    ]))
    items = read_prompts(f)
    assert [(i.prompt_id, i.instruction, i.category) for i in items] == [
        ("81-0", "Write a blog post.", "writing"), ("82-0", "What is 2+2?", "math")]
    both = read_prompts(f, first_turn_only=False)
    assert len(both) == 4 and both[1].history[0]["content"] == "Write a blog post."
    c = tmp_path / "p.csv"
    c.write_text("prompt\nhello there\nsecond one\n")
    assert [i.instruction for i in read_prompts(c)] == ["hello there", "second one"]


def test_cli_generate_stores_and_resumes(tmp_path: Path, tiny: Path) -> None:
    from itaudit.cli import main
    from itaudit.store import Store

    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    db = tmp_path / "g.duckdb"
    args = ["generate", "--model", str(tiny), "--prompts", str(f), "--db", str(db), "--max-new-tokens", "6",
            "--batch-size", "2", "-q", "--run-id", "g1"]
    main(args)
    main(args)  # resuming a finished run adds nothing
    with Store(db) as s:
        df = s.query("SELECT * FROM generations ORDER BY prompt_id")
    assert df.height == 4 and set(df["run_id"]) == {"g1"}
    assert json.loads(df["settings"][0])["max_new_tokens"] == 6
    assert df["prompt"][0].startswith("<|bos|><|user|>") and all(n <= 6 for n in df["n_tokens"])


def test_prompt_items_from_lists_and_errors(tmp_path) -> None:
    from itaudit.errors import ItauditError
    from itaudit.models import prompt_items

    items = prompt_items(prompts=["Say hi", {"id": "q7", "question": "Why?", "output": "Because."}])
    assert [(i.prompt_id, i.instruction, i.response) for i in items] == [("0", "Say hi", None), ("q7", "Why?", "Because.")]
    assert len(prompt_items(prompts=["a", "b", "c"], limit=2)) == 2
    with pytest.raises(ItauditError, match="either prompts"):
        prompt_items(prompts=["a"], dataset="d")
    with pytest.raises(ItauditError, match="prompt 1: expected a string or a dict"):
        prompt_items(prompts=["a", 3])
