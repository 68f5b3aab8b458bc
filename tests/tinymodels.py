"""Tiny real models for unit tests: a seeded random Llama with a real BPE tokenizer, and LoRA adapters.

    from tests.tinymodels import tiny_causal_lm, tiny_lora_adapter
    model_dir = tiny_causal_lm(tmp_path / "tiny")           # HF dir with safetensors + tokenizer
    adapter_dir = tiny_lora_adapter(model_dir, tmp_path / "lora")

Both are deterministic (same files for the same arguments) and take well under a second.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_TEXT = [
    "Name three primary colours. Red, blue and yellow are the primary colours.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The sea is wide and deep and blue.",
    "Give me a list of fruits: apples, bananas, oranges, grapes and pears.",
    "Sure! Here is an answer to your question. I hope this helps.",
    "Translate hello into Spanish. Hello in Spanish is hola.",
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 6 7 8 9 0",
]

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(vocab_text: list[str] | None = None, vocab_size: int = 400, chat_template: bool = True):
    """A byte-level BPE tokenizer trained offline on `vocab_text`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(vocab_text or DEFAULT_TEXT), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        additional_special_tokens=SPECIALS[3:],
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(
    dir: Path,
    vocab_text: list[str] | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    init_std: float = 0.2,
    chat_template: bool = True,
    vocab_size: int = 400,
) -> Path:
    """Write a tiny random Llama (seeded) + tokenizer to `dir` as a HF directory; returns `dir`.

    `init_std` is larger than usual so next-token distributions are peaked (ranks are meaningful).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(vocab_text, vocab_size, chat_template)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, initializer_range=init_std, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(dir))
    tok.save_pretrained(str(dir))
    return dir


def perturbed_copy(src: Path, dst: Path, *, scale: float = 0.5, seed: int = 1, layers: int | None = None) -> Path:
    """A copy of the tiny model at `src` with Gaussian noise (std `scale` x weight std) on its
    attention/MLP weights: same tokenizer and vocabulary, shifted distributions."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src), use_safetensors=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "layers." in name and (layers is None or int(name.split("layers.")[1].split(".")[0]) < layers):
                p.add_(torch.randn(p.shape, generator=g) * p.std() * scale)
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    return Path(dst)


def tiny_lora_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    r: int = 4,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "down_proj"),
    zero: bool = False,
    scale: float = 1.0,
) -> Path:
    """A LoRA adapter for the model at `base_dir` (peft get_peft_model + save_pretrained).

    By default both LoRA matrices are random (seeded) so the adapter changes the model's
    predictions; `zero=True` gives the standard init (B = 0), an adapter that changes nothing.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.0,
                     init_lora_weights=True, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    if not zero:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name or "lora_A" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * scale * (0.5 if "lora_A" in name else 1.0))
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)
