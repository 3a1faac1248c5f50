"""``method: lora``: a LoRA adapter trained with peft on a Hugging Face checkpoint of the base model,
saved as safetensors (``adapter_model.safetensors`` + ``adapter_config.json``, the folder Ollama's
``/api/create`` takes as an adapter for Llama, Mistral and Gemma families).

The loop is a plain PyTorch one rather than transformers' ``Trainer``: it needs no ``accelerate``,
checks for cancellation between steps and reports every step's loss. Only the answer's tokens are
learned (the prompt's labels are masked). PyTorch, transformers and peft come with the ``finetune``
extra and are imported only here, so the core install stays light."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.finetune.report import Cancelled, JobError, Report
from schemas.finetune import Example, LoraParams
from schemas.model import Adapter, Model

IGNORE = -100  # labels PyTorch's cross-entropy skips
#: Architectures whose safetensors LoRA adapters Ollama's /api/create converts.
OLLAMA_ADAPTER_FAMILIES = ("llama", "mistral", "gemma", "gemma2", "gemma3")


def imports() -> tuple[Any, Any, Any]:
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise JobError(
            f"the lora method needs PyTorch, transformers and peft on the worker ({exc.name} is missing): "
            "pip install 'llm-tuning-service[finetune]'"
        ) from exc
    return torch, transformers, peft


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one row: the prompt (every turn but the last) is masked."""
    messages = [m.model_dump() for m in example.as_messages()]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    else:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:-1]) + "assistant: "
    answer = messages[-1]["content"] + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and not getattr(tokenizer, "chat_template", None):
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def split(
    rows: list[tuple[list[int], list[int]]], fraction: float, seed: int
) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]]]:
    """The rows to train on and those held out (``fraction`` of them, at least one when above 0;
    the same ones for the same seed), each in the dataset's order."""
    if fraction <= 0:
        return rows, []
    count = max(1, round(len(rows) * fraction))
    if count >= len(rows):
        raise JobError(f"eval_fraction={fraction:g} of {len(rows)} rows leaves none to train on; lower it or add rows")
    chosen = set(random.Random(seed).sample(range(len(rows)), count))
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def train(
    base: Model, output_model: str, examples: list[Example], params: LoraParams, report: Report, stop: threading.Event,
    out_dir: Path, keep: Callable[[Path], str] | None = None,
) -> Model:  # fmt: skip
    """Train and save the adapter in ``out_dir``; the Model whose adapter is ``params.adapter_path``,
    else the saved files as ``keep`` (the control plane's artifact store) stores them, else ``out_dir``."""
    torch, transformers, peft = imports()
    checkpoint = Path(params.base_checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise JobError(f"base_checkpoint {checkpoint} is not a Hugging Face checkpoint folder (no config.json on this worker)")
    device = params.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise JobError("device 'cuda' was asked for but this worker has no CUDA GPU")
    torch.manual_seed(params.seed)
    report.log(f"loading {checkpoint} on {device}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint)
    family = getattr(model.config, "model_type", "?")
    if family not in OLLAMA_ADAPTER_FAMILIES:
        report.log(f"architecture '{family}': Ollama converts safetensors adapters for {', '.join(OLLAMA_ADAPTER_FAMILIES)} "
                   "only; the agents' /api/create may refuse this one", "warning")  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise JobError("the checkpoint's tokenizer has neither a pad nor an end-of-sequence token")
    rows = [encode(tokenizer, e, params.max_length) for e in examples]
    rows = [r for r in rows if any(label != IGNORE for label in r[1])]
    if not rows:
        raise JobError(f"every row's answer is cut off by max_length={params.max_length}; raise it")
    rows, held_out = split(rows, params.eval_fraction, params.seed)
    config = peft.LoraConfig(
        r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout, target_modules=params.target_modules,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    try:
        model = peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules the architecture lacks
        raise JobError(f"LoRA cannot be applied to this checkpoint: {exc}") from exc
    model.to(device)
    trainable, total = model.get_nb_trainable_parameters()
    report.metric("trainable_parameters", int(trainable))
    report.log(f"{len(rows)} rows; LoRA r={params.rank} alpha={params.alpha}: {trainable:,} of {total:,} parameters train")

    def tensors(batch: list[tuple[list[int], list[int]]]) -> tuple[Any, Any, Any]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=device)
        labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in batch], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
        return input_ids, labels, mask

    def evaluate(at_step: int) -> float:
        """The held-out rows' loss per answer token (the model predicts token t+1 from 0..t)."""
        model.eval()
        loss_sum = tokens = 0.0
        with torch.no_grad():
            for first in range(0, len(held_out), params.batch_size):
                input_ids, labels, mask = tensors(held_out[first : first + params.batch_size])
                counted = int((labels[:, 1:] != IGNORE).sum())
                loss_sum += float(model(input_ids=input_ids, attention_mask=mask, labels=labels).loss) * counted
                tokens += counted
        model.train()
        value = loss_sum / max(tokens, 1)
        report.point("eval_loss", at_step, value)
        return value

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.learning_rate)
    per_epoch = math.ceil(len(rows) / params.batch_size)
    steps = params.max_steps or per_epoch * params.epochs  # max_steps wins, cycling over the rows as needed
    order = random.Random(params.seed)
    model.train()
    eval_every = max(1, steps // 10)
    before = after = evaluate(0) if held_out else None
    step, batch_rows = 0, list(range(len(rows)))
    while step < steps:
        order.shuffle(batch_rows)
        for first in range(0, len(batch_rows), params.batch_size):
            if step >= steps:
                break
            if stop.is_set():
                raise Cancelled(f"stopped after {step} of {steps} steps")
            input_ids, labels, mask = tensors([rows[i] for i in batch_rows[first : first + params.batch_size]])
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise JobError(f"the loss became {loss.item()} at step {step + 1}; lower learning_rate")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            report.point("loss", step, float(loss.item()))
            report.progress(step / steps)
            if held_out and (step % eval_every == 0 or step == steps):
                after = evaluate(step)
    if before is not None:
        report.log(f"held-out loss {before:.4f} → {after:.4f} on {len(held_out)} rows not trained on")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    files = sorted(p.name for p in out_dir.iterdir())
    report.log(f"adapter saved to {out_dir}: {', '.join(files)}")
    if params.adapter_path or keep is None:
        adapter = Adapter(path=params.adapter_path or str(out_dir.resolve()))
    else:  # what Ollama needs: the weights, and the config its converter reads rank and alpha from
        kept = {f.name: keep(f) for f in [*sorted(out_dir.glob("*.safetensors")), out_dir / "adapter_config.json"]}
        report.log(f"adapter files kept by the control plane: {', '.join(f'{n} ({d[:19]}…)' for n, d in kept.items())}")
        adapter = Adapter(files=kept)
    spec = base.spec.model_copy(
        update={
            "base": base.spec.ollama_tag,
            "ollama_tag": output_model,
            "adapters": [adapter],
            "messages": [],
        }
    )
    return Model.model_validate({"metadata": {"name": output_model}, "spec": spec.model_dump(mode="json")})
