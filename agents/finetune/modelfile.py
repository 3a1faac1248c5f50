"""``method: modelfile``: a derived model, no training. The base's tag becomes the ``base`` the
agents create from (``/api/create``), with a system prompt, a few rows as example turns and
options; the rows chosen are the shortest that fit the budget, kept in the dataset's order."""

from __future__ import annotations

from agents.finetune.report import JobError, Report
from schemas.finetune import Example, ModelfileParams
from schemas.model import Message, Model


def shared_system(examples: list[Example]) -> str | None:
    """The system turn every row starts with, when they all share one."""
    prompts = {next((m.content for m in e.as_messages() if m.role == "system"), None) for e in examples}
    return prompts.pop() if len(prompts) == 1 else None


def few_shot(examples: list[Example], count: int, budget_chars: int) -> list[Message]:
    turns = [[m for m in e.as_messages() if m.role != "system"] for e in examples]
    sizes = [sum(len(m.content) for m in t) for t in turns]
    chosen: list[int] = []
    used = 0
    for index in sorted(range(len(turns)), key=lambda i: (sizes[i], i)):
        if len(chosen) == count:
            break
        if used + sizes[index] <= budget_chars:
            chosen.append(index)
            used += sizes[index]
    return [Message(role=m.role, content=m.content) for i in sorted(chosen) for m in turns[i]]


def derive(base: Model, output_model: str, examples: list[Example], params: ModelfileParams, report: Report) -> Model:
    spec = base.spec
    system, source = params.system_prompt, "request"
    if system is None:
        system, source = shared_system(examples), "dataset"
    if system is None:
        system, source = spec.system_prompt, "base"
    messages = few_shot(examples, params.few_shot, params.max_few_shot_chars)
    if params.few_shot and not messages:
        raise JobError(f"no row fits the few-shot budget of {params.max_few_shot_chars} characters; raise max_few_shot_chars")
    options = {**spec.options.model_dump(exclude_none=True), **params.parameters.model_dump(exclude_none=True)}
    derived = spec.model_copy(
        update={
            "base": spec.ollama_tag,  # a derived base is created on the nodes already: build on it
            "ollama_tag": output_model,
            "system_prompt": system,
            "template": None,
            "adapters": [],
            "messages": messages,
            "options": type(spec.options).model_validate(options),
        }
    )
    chars = sum(len(m.content) for m in messages)
    report.metric("few_shot_turns", len(messages))
    report.metric("few_shot_chars", chars)
    report.metric("system_prompt_from", source if system else "none")
    report.log(f"derived {output_model} from {base.name} ({spec.ollama_tag}): {len(messages)} example turns "
               f"({chars} characters), {f'system prompt from the {source}' if system else 'no system prompt'}, "
               f"options {sorted(options) or 'none'}")  # fmt: skip
    return Model.model_validate({"metadata": {"name": output_model}, "spec": derived.model_dump(mode="json")})
