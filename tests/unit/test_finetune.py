"""Fine-tuning parts on their own: the modelfile derivation, the job table's compare-and-set state
changes (SQLite), the agent's adapter files, and the Model's few-shot messages."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.finetune.lora import split
from agents.finetune.modelfile import derive, few_shot, shared_system
from agents.finetune.report import JobError, Report
from agents.sidecar.desired import desired_model
from agents.sidecar.node import adapter_files
from controlplane.db.engine import make_engine, migrate
from controlplane.db.jobs import JobStore
from controlplane.db.models import ACTIVE_JOB_STATES, FineTuneJob
from schemas.finetune import FINAL_STATES, Example, FineTuneRequest, JobState, LoraParams, ModelfileParams
from schemas.model import Model


def base_model(**spec: object) -> Model:
    doc = {"ollama_tag": "llama3.2:1b", "capabilities": ["chat"], "context_window": 8192, **spec}
    return Model.model_validate({"metadata": {"name": "small"}, "spec": doc})


def rows(*pairs: tuple[str, str], system: str | None = None) -> list[Example]:
    out = []
    for prompt, response in pairs:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        out.append(Example.model_validate({"messages": ([{"role": "system", "content": system}] if system else []) + turns}))
    return out


def test_few_shot_takes_the_shortest_rows_that_fit_in_dataset_order() -> None:
    examples = rows(("long question here", "long answer here"), ("q1", "a1"), ("q22", "a22"), ("q3", "a3"))
    picked = few_shot(examples, count=2, budget_chars=100)
    assert [m.content for m in picked] == ["q1", "a1", "q3", "a3"]
    assert [m.content for m in few_shot(examples, count=5, budget_chars=10)] == ["q1", "a1", "q3", "a3"]  # 4+4; q22 needs 6
    assert few_shot(examples, count=0, budget_chars=100) == []


def test_derive_takes_the_system_prompt_from_request_then_dataset_then_base() -> None:
    base = base_model(system_prompt="base prompt", options={"temperature": 0.7, "num_ctx": 4096})
    shared = rows(("q", "a"), ("r", "b"), system="shared")
    params = ModelfileParams(few_shot=1, parameters={"temperature": 0.1})  # type: ignore[arg-type]
    model = derive(base, "small-x", shared, params, Report())
    assert model.spec.system_prompt == "shared" and model.spec.base == "llama3.2:1b" and model.spec.ollama_tag == "small-x"
    assert model.spec.options.temperature == 0.1 and model.spec.options.num_ctx == 4096
    assert [m.role for m in model.spec.messages] == ["user", "assistant"]  # system turns are not repeated as examples
    mixed = [*rows(("q", "a"), system="one"), *rows(("r", "b"), system="two")]
    assert shared_system(mixed) is None
    assert derive(base, "small-x", mixed, params, Report()).spec.system_prompt == "base prompt"
    explicit = ModelfileParams(system_prompt="mine", few_shot=0)
    assert derive(base, "small-x", shared, explicit, Report()).spec.system_prompt == "mine"
    with pytest.raises(JobError, match="few-shot budget"):
        derive(base, "small-x", rows(("question", "answer")), ModelfileParams(few_shot=1, max_few_shot_chars=3), Report())


def test_request_checks_hyperparameters_per_method() -> None:
    req = FineTuneRequest(base_model="small", output_model="x", dataset="{}", method="lora", hyperparameters={"rank": 8})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="base_checkpoint"):
        req.params()
    ok = FineTuneRequest(base_model="small", output_model="x", dataset="{}", method="lora",  # type: ignore[arg-type]
                         hyperparameters={"base_checkpoint": "/ckpt", "target_modules": "all-linear"})  # fmt: skip
    assert isinstance(ok.params(), LoraParams)
    with pytest.raises(ValidationError, match="differ"):
        FineTuneRequest(base_model="small", output_model="small", dataset="{}")
    with pytest.raises(ValidationError, match="one of the two"):
        FineTuneRequest(base_model="small", output_model="x")


def job(store: JobStore, job_id: str = "ft-1", output: str = "x") -> FineTuneJob:
    row = FineTuneJob(
        id=job_id, request_digest="d", actor="me", state="queued", method="modelfile", base_model="small", output_model=output,
        auto_experiment=False, experiment_share=0.1, hyperparameters={}, dataset_id="ds", base_spec={}, progress=0.0,
        attempt=1, cancel_requested=False, metrics={}, created_at=time.time(),
    )  # fmt: skip
    assert store.insert(row)
    return row


def row_like(job_id: str, output: str) -> FineTuneJob:
    row = _same_id()
    row.id, row.output_model = job_id, output
    return row


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    return JobStore(engine)


def test_a_run_is_claimed_once_and_a_replaced_attempt_cannot_write(store: JobStore) -> None:
    job(store)
    assert not store.insert(_same_id())  # ids are unique
    assert store.claim("ft-1", 1, "w1") is not None
    assert store.claim("ft-1", 1, "w2") is None  # the same run delivered twice: one worker runs it
    assert store.heartbeat("ft-1", 1, progress=0.5).alive
    lost = store.get("ft-1")
    assert lost is not None
    assert store.requeue(lost, max_attempts=3, why="worker w1 lost") is JobState.QUEUED
    assert store.requeue(lost, max_attempts=3, why="again") is None  # another control plane did it first
    beat = store.heartbeat("ft-1", 1, progress=0.9)
    assert not beat.alive  # w1 came back: its attempt is not the job's any more
    assert not store.finish("ft-1", 1, JobState.REGISTERING, result={"x": 1})
    again = store.claim("ft-1", 2, "w2")
    assert again is not None and again.progress == 0.0 and again.attempt == 2
    assert store.finish("ft-1", 2, JobState.REGISTERING, result={"x": 1})
    assert store.registered("ft-1", revision=7, experiment=None)
    done = store.get("ft-1")
    assert done is not None and done.state == "succeeded" and done.model_revision == 7 and done.progress == 1.0


def _same_id() -> FineTuneJob:
    return FineTuneJob(
        id="ft-1", request_digest="other", actor="me", state="queued", method="modelfile", base_model="small",
        output_model="y", auto_experiment=False, experiment_share=0.1, hyperparameters={}, dataset_id="ds", base_spec={},
        progress=0.0, attempt=1, cancel_requested=False, metrics={}, created_at=time.time(),
    )  # fmt: skip


def test_lost_runs_fail_after_the_last_attempt_and_cancel_wins(store: JobStore) -> None:
    job(store, "ft-a")
    assert store.claim("ft-a", 1, "w") is not None
    row = store.get("ft-a")
    assert row is not None
    assert store.requeue(row, max_attempts=1, why="worker w lost") is JobState.FAILED
    failed = store.get("ft-a")
    assert failed is not None and "1 of 1 attempts" in (failed.error or "")

    job(store, "ft-b")
    assert store.claim("ft-b", 1, "w") is not None
    asked = store.request_cancel("ft-b")
    assert asked is not None and asked.state == "running" and asked.cancel_requested
    assert store.heartbeat("ft-b", 1).cancel
    row = store.get("ft-b")
    assert row is not None
    assert store.requeue(row, max_attempts=3, why="worker w lost") is JobState.CANCELLED  # lost while cancelling

    job(store, "ft-c")
    cancelled = store.request_cancel("ft-c")
    assert cancelled is not None and cancelled.state == "cancelled"
    assert store.claim("ft-c", 1, "w") is None


def test_one_active_job_per_output_model_even_in_a_race(store: JobStore) -> None:
    job(store, "ft-1", output="x")
    assert not store.insert(row_like("ft-2", "x"))  # the read-then-insert race ends here: the index refuses it
    assert store.insert(row_like("ft-3", "y"))
    busy = store.active_output("x")
    assert busy is not None and busy.id == "ft-1"
    assert store.request_cancel("ft-1") is not None  # queued → cancelled: the name is free again
    assert store.active_output("x") is None
    assert store.insert(row_like("ft-2", "x"))
    active = {s.value for s in JobState} - {s.value for s in FINAL_STATES}
    assert f"state IN ({', '.join(repr(v) for v in sorted(active, key=list(JobState).index))})" == ACTIVE_JOB_STATES


def test_adapter_files_are_the_weights_and_their_config(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"w")
    (folder / "adapter_config.json").write_text("{}")
    (folder / "README.md").write_text("peft writes one")
    expected = [folder / "adapter_model.safetensors", folder / "adapter_config.json"]
    assert adapter_files(folder) == expected
    assert adapter_files(folder / "adapter_model.safetensors") == expected
    gguf = tmp_path / "lora.gguf"
    assert adapter_files(gguf) == [gguf]
    (folder / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        adapter_files(folder)


def test_few_shot_messages_need_a_base_and_change_the_create_request() -> None:
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(ValidationError, match="set base"):
        base_model(messages=turns)
    plain = desired_model(base_model(base="llama3.2:1b", ollama_tag="x"))
    with_turns = desired_model(base_model(base="llama3.2:1b", ollama_tag="x", messages=turns))
    assert with_turns.derived is not None and plain.derived is not None
    assert with_turns.derived.messages == (("user", "q"), ("assistant", "a"))
    assert with_turns.derived.fingerprint != plain.derived.fingerprint


def test_held_out_rows_are_a_seeded_share_and_leave_rows_to_train_on() -> None:
    rows = [([i], [i]) for i in range(10)]
    train, held = split(rows, 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8 and sorted(train + held) == rows
    assert split(rows, 0.2, seed=1) == (train, held) and split(rows, 0.0, seed=1) == (rows, [])
    assert len(split(rows[:3], 0.01, seed=0)[1]) == 1  # above 0: at least one row
    with pytest.raises(JobError, match="leaves none to train on"):
        split(rows[:1], 0.5, seed=0)


def test_a_long_loss_curve_stays_bounded() -> None:
    report = Report()
    for step in range(1, 5001):
        report.point("loss", step, 1.0 / step)
    curve = report.drain()[1]["loss"]
    assert len(curve) < Report.MAX_POINTS and curve[0][0] == curve[1][0] // 2 and curve[-1][0] > 4900
    steps = [s for s, _ in curve]
    assert steps == sorted(steps) and len({b - a for a, b in itertools.pairwise(steps)}) == 1  # evenly spaced
