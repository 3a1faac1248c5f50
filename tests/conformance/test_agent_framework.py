"""An agent framework's OpenAI-compatible chat model through the router: LangChain's ``ChatOpenAI``
(the most used framework, and a light install: langchain-core, langsmith, tiktoken) binding a
tool, running it and answering from its result, streamed and not, and structured output into a
pydantic model, against an Ollama node and a static OpenAI-compatible upstream."""

from __future__ import annotations

import os

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.conformance.cases import ASK, RESULT, Forecast, run_tool
from tests.conformance.conftest import UPSTREAMS, Stack

pytestmark = pytest.mark.etcd
os.environ.setdefault("LANGSMITH_TRACING", "false")  # nothing leaves the machine


@tool
def get_weather(city: str, unit: str) -> str:
    """The weather in a city (unit: celsius or fahrenheit)."""
    return run_tool("get_weather", {"city": city, "unit": "celsius" if unit not in ("celsius", "fahrenheit") else unit})


def _model(stack: Stack, model: str) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=10, stream_usage=True)


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_calling_agent_loop(stack: Stack, model: str, stream: bool) -> None:
    llm = _model(stack, model).bind_tools([get_weather])
    history: list[BaseMessage] = [HumanMessage(ASK)]
    for turn in range(2):
        if stream:  # chunks merged by LangChain: tool call fragments joined by index
            merged: AIMessageChunk | None = None
            async for chunk in llm.astream(history):
                merged = chunk if merged is None else merged + chunk
            assert merged is not None
            answer: AIMessage = merged
        else:
            answer = await llm.ainvoke(history)
        assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0, answer
        if turn == 1:
            assert not answer.tool_calls and RESULT in str(answer.content)
            break
        assert [c["name"] for c in answer.tool_calls] == ["get_weather"] and answer.tool_calls[0]["id"], answer
        history.append(answer)
        for call in answer.tool_calls:
            history.append(ToolMessage(content=await get_weather.ainvoke(call["args"]), tool_call_id=call["id"]))


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_structured_output_into_a_pydantic_model(stack: Stack, model: str) -> None:
    shaped = _model(stack, model).with_structured_output(Forecast, method="json_schema")
    forecast = await shaped.ainvoke(ASK)
    assert isinstance(forecast, Forecast) and forecast.city
    loose = _model(stack, model).with_structured_output(Forecast, method="json_mode")  # json_object, then parsed
    with pytest.raises(Exception, match="Forecast"):  # the simulator's json_object answer is not a Forecast: parsed, refused
        await loose.ainvoke("a forecast as JSON")
