"""Build the demo notebooks: write each from its cells, execute it, store it with outputs.

    python notebooks/build.py            # all notebooks
    python notebooks/build.py 03         # those whose name starts with 03

Every notebook runs offline against local fault-injecting servers, with no API key.
The test suite executes the stored notebooks again, so they cannot rot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

SERVERS = """\
from mesh_core.testing import FaultServer, faults

# Three local OpenAI-compatible servers play three providers. They fail on command.
alpha, beta, gamma = FaultServer().start(), FaultServer().start(), FaultServer().start()
providers = {name: {"base_url": s.base_url, "timeouts": {"total": "5s", "first_token": "2s"}}
             for name, s in {"alpha": alpha, "beta": beta, "gamma": gamma}.items()}
"""

STOP = "for s in (alpha, beta, gamma):\n    s.stop()"

LANGCHAIN = [
    (
        "md",
        "# LangChain quickstart: `MeshChatModel`\n\n"
        "A chat model that routes every call through a capability pool and fails over "
        "transparently. Everything here runs offline against local fault-injecting servers.",
    ),
    ("code", SERVERS),
    (
        "code",
        """\
from modelmesh_langchain import MeshChatModel

config = {
    "providers": providers,
    "models": {
        "alpha.fast": {"provider": "alpha"},
        "beta.smart": {"provider": "beta"},
        "gamma.backup": {"provider": "gamma"},
    },
    "pools": {
        "reasoning": {
            "capability": "chat-completion",
            "strategy": "priority-selection",
            # hedging is on by default (after: auto, learned from each model's history);
            # a notebook is too short to learn it, so the threshold is set here
            "hedging": {"after": "500ms"},
        }
    },
}
llm = MeshChatModel(pool="reasoning", config=config, temperature=0)""",
    ),
    ("md", "## A chain"),
    (
        "code",
        """\
from langchain_core.prompts import ChatPromptTemplate

chain = ChatPromptTemplate.from_messages([("user", "Explain {topic} in one line")]) | llm
msg = chain.invoke({"topic": "failover"})
print(msg.content)
print("answered by:", msg.response_metadata["model_name"], "| usage:", msg.usage_metadata)""",
    ),
    ("md", "## Streaming"),
    (
        "code",
        """\
for chunk in llm.stream("Stream a short answer"):
    print(chunk.content, end="|")
print("\\nlast chunk:", chunk.response_metadata["model_name"], chunk.usage_metadata)""",
    ),
    ("md", "## Tools and structured output"),
    (
        "code",
        '''\
from langchain_core.tools import tool
from pydantic import BaseModel


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"It is sunny in {city}."


ai = llm.bind_tools([get_weather]).invoke("What's the weather in 'Lisbon'?")
print(ai.tool_calls)


class Joke(BaseModel):
    setup: str
    punchline: str


print(llm.with_structured_output(Joke).invoke("Tell me a joke about routers."))''',
    ),
    ("md", "## A late first token is hedged; a cut stream is continued"),
    (
        "code",
        """\
alpha.enqueue("fast", faults.slow_first_token(1.8))  # alpha's next first token is late
chunks = list(llm.stream("Who answers first?"))
print("".join(c.content for c in chunks))
attempts = chunks[-1].response_metadata["mesh"]["attempts"]
print("hedged:", [(a["model_id"], a["outcome"]) for a in attempts])  # slow, not failed""",
    ),
    (
        "code",
        """\
alpha.enqueue("fast", faults.cut(after=3))  # alpha's next stream breaks after 3 tokens
chunks = list(llm.stream("Tell me something"))
print("|".join(c.content for c in chunks))  # one answer: alpha's start, beta's continuation
meta = [c.response_metadata.get("mesh", {}) for c in chunks]
print("continued from:", next(m["continued_from"] for m in meta if "continued_from" in m))""",
    ),
    ("md", "## A provider fails; the chain keeps answering"),
    (
        "code",
        """\
alpha.set("fast", faults.server_error(503))    # alpha answers 503 from now on
beta.enqueue("smart", faults.reset())          # beta resets the next connection
answers = [chain.invoke({"topic": f"topic {i}"}) for i in range(5)]
for m in answers:
    print(m.response_metadata["model_name"], "<-", m.content[:40])""",
    ),
    ("md", "## What the mesh did"),
    (
        "code",
        """\
from IPython.display import Markdown

rows = ["| request | attempt | model | outcome | status | latency ms |",
        "|---|---|---|---|---|---|"]
for i, m in enumerate(answers, 1):
    for j, a in enumerate(m.response_metadata["mesh"]["attempts"], 1):
        rows.append(f"| {i} | {j} | {a['model_id']} | {a['outcome']} | {a['status_code'] or ''} "
                    f"| {a['latency'] * 1000:.1f} |")
Markdown("\\n".join(rows))""",
    ),
    (
        "code",
        """\
for mid in llm.mesh.models:
    s = llm.mesh.snapshot(mid)
    print(f"{mid:13} {s.status:8} {s.deactivation_reason or '-':16} failures={s.failure_count}")""",
    ),
    ("code", STOP),
]

LLAMAINDEX = [
    (
        "md",
        "# LlamaIndex: `MeshLLM` and `MeshEmbedding` as a query engine and agent LLM\n\n"
        "A small vector index over a handful of documents, embedded through an embedding pool "
        "and queried through a chat pool, both failing over.",
    ),
    ("code", SERVERS),
    (
        "code",
        """\
from llama_index.core import Document, VectorStoreIndex
from modelmesh_llamaindex import MeshEmbedding, MeshLLM

# Vectors are comparable only within one embedding space (one model, one dimension):
# the pool fails over between its two members, which serve the same model, and never
# to a model of another space.
embedder = {"name": "text-embedding-3-small", "capabilities": ["text-embeddings"],
            "dimensions": 64, "embedding_space": "openai/text-embedding-3-small@64"}
config = {
    "providers": providers,
    "models": {
        "alpha.fast": {"provider": "alpha"},
        "beta.smart": {"provider": "beta"},
        "gamma.embed": {"provider": "gamma", **embedder},
        "beta.embed": {"provider": "beta", **embedder},  # the same model at another provider
    },
    "pools": {
        "reasoning": {"capability": "chat-completion"},
        "embeddings": {"capability": "text-embeddings", "strategy": "priority-selection",
                       "models": ["gamma.embed", "beta.embed"]},
    },
}
embed_model = MeshEmbedding(pool="embeddings", config=config)
docs = [Document(text=t) for t in [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "Owls are nocturnal birds that hunt small mammals at night.",
    "ModelMesh routes every request to a healthy model of a capability pool.",
]]
index = VectorStoreIndex.from_documents(docs, embed_model=embed_model)
print("embedded in:", embed_model.pinned_space)
llm = MeshLLM(pool="reasoning", config=config)
print(llm.metadata)""",
    ),
    (
        "md",
        "## Querying\n\n"
        "The scripted server echoes the prompt, so we see the retrieved context. Its vectors "
        "are hashes of the text: deterministic (the same text always gets the same vector) but "
        "meaningless, so which document is nearest to a question is arbitrary here; with a "
        "real embedding model it is the closest in meaning.",
    ),
    (
        "code",
        """\
from mesh_core import EventType

answered = []  # the model that served each call (embedding or chat), as the mesh reports it
llm.mesh.on(EventType.REQUEST_SUCCESS, lambda e: answered.append(e.model_id))
engine = index.as_query_engine(llm=llm, similarity_top_k=1)
response = engine.query("When was the Eiffel Tower finished?")
print(str(response)[:160])
print("query embedded by:", answered[-2])
print("answered by:", answered[-1])""",
    ),
    (
        "md",
        "## Failover during queries\n\n"
        "The chat model goes silent and the primary embedding model fails: the question is "
        "embedded by the other member of the same space (never by a model of another space, "
        "whose vectors could not be compared with the index's), and answered by the next "
        "chat model.",
    ),
    (
        "code",
        """\
alpha.set("fast", faults.silent())    # alpha accepts requests and never answers
gamma.set("text-embedding-3-small", faults.server_error(503))  # the primary embedder fails
streaming = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=1)
resp = streaming.query("What do owls hunt?")
print("".join(resp.response_gen)[:80])
print("query embedded by:", answered[-2], "in", embed_model.pinned_space)
print("answered by:", answered[-1])
for mid in llm.mesh.models:
    s = llm.mesh.snapshot(mid)
    print(f"{mid:11} {s.status:8} last error: {s.last_error_kind}")""",
    ),
    ("md", "## An agent with a tool"),
    (
        "code",
        '''\
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm)
result = await agent.run("What is 6 times 7? Use multiply.")
print(result)''',
    ),
    ("code", STOP),
]

STRATEGIES = [
    (
        "md",
        "# The eight strategies compared\n\n"
        "The same 40 requests through a pool of three models, once per strategy. Model "
        "`alpha` fails between requests 10 and 20. The mesh runs on a manual clock (one "
        "second per request), so cooldowns and recoveries land at the same requests every run.",
    ),
    ("code", SERVERS),
    (
        "code",
        """\
from mesh_core import Mesh, ManualClock
from mesh_core import EventType

STRATEGIES = ["stick-until-failure", "priority-selection", "round-robin", "cost-first",
              "latency-first", "session-stickiness", "rate-limit-aware", "load-balanced"]
MODELS = ["alpha.a", "beta.b", "gamma.c"]


def run(strategy):
    for s in (alpha, beta, gamma):
        s.reset()
    beta.set("b", faults.ok(delay=0.02))          # beta is the slowest: latency-first notices
    gamma.set("c", faults.ok(delay=0.005))        # gamma is in between
    gamma.rate_limit("c", limit=1000)             # gamma reports plenty of headroom
    alpha.rate_limit("a", limit=22)               # alpha's headroom shrinks as it is used
    clock = ManualClock()
    config = {
        "providers": providers,
        "models": {
            "alpha.a": {"provider": "alpha", "pricing": {"input_per_1k": 1.0}},
            "beta.b": {"provider": "beta", "pricing": {"input_per_1k": 0.1}},
            "gamma.c": {"provider": "gamma", "pricing": {"input_per_1k": 0.5}},
        },
        "pools": {"p": {"capability": "chat-completion", "strategy": strategy,
                        "deactivation": {"retry_limit": 2}, "recovery": {"cooldown": "5s"},
                        "retry": {"max_attempts": 1}}},
    }
    served, events, last_status = [], [], {}
    with Mesh.from_config(config, clock=clock) as mesh:
        def note(kind):  # (request, what, model): what happened before which request
            return lambda e: events.append(
                (len(served) + 1, kind if kind == "back" else f"out {last_status[e.model_id]}",
                 e.model_id))

        mesh.on(EventType.REQUEST_FAILURE,
                lambda e: last_status.__setitem__(e.model_id, e.metadata["status_code"]))
        mesh.on(EventType.MODEL_DEACTIVATED, note("out"))
        mesh.on(EventType.MODEL_REACTIVATED, note("back"))
        for i in range(1, 41):
            if i == 10:
                alpha.set("a", faults.server_error(503))
            if i == 20:
                alpha.set("a", faults.ok())
            served.append(mesh.complete("p", f"request {i}", session_id=f"user{i % 3}").model)
            clock.advance(1)
    return served, events


results = {s: run(s) for s in STRATEGIES}
for s, (served, _) in results.items():
    print(f"{s:20}", {m: served.count(m) for m in MODELS})""",
    ),
    (
        "code",
        """\
import matplotlib.pyplot as plt
from itertools import groupby

fig, axes = plt.subplots(4, 2, figsize=(12, 11), sharex=True)
for ax, (strategy, (served, events)) in zip(axes.flat, results.items()):
    rows = [MODELS.index(m) for m in served]
    ax.scatter(range(1, 41), rows, s=18, c=rows, cmap="viridis", vmin=0, vmax=2)
    ax.axvspan(10, 20, color="red", alpha=0.06)
    # One label per request: a model back on trial that fails at once is one event. A label
    # close to the previous one goes on the other side of its line.
    last_at, side = -10, "left"
    for at, same in groupby(events, key=lambda e: e[0]):
        kinds = [kind for _, kind, _ in same]
        if kinds[0] == "back" and len(kinds) > 1:
            label, color = "trial failed", "darkorange"  # back on trial, out again at once
        elif kinds[-1] == "back":
            label, color = "alpha back", "green"
        else:
            label, color = "alpha out", "red"
        side = "left" if at - last_at <= 2 and side == "right" else "right"
        last_at = at
        ax.axvline(at, color=color, alpha=0.5, lw=1)
        ax.annotate(label, (at, 2.2), fontsize=7, rotation=90, va="bottom", ha=side)
        if "out 429" in kinds:  # not the shaded failure: alpha's own rate limit ran out
            ax.annotate("429: alpha's rate limit\\n(22 requests) ran out", xy=(at, 0),
                        xytext=(at - 1.5, 0.3), fontsize=7, ha="right",
                        arrowprops={"arrowstyle": "->", "lw": 0.7})
    ax.set_title(strategy)
    ax.set_yticks(range(3), MODELS)
    ax.set_ylim(-0.5, 3.5)
for ax in axes[-1]:
    ax.set_xlabel("request")
fig.suptitle("Which model served each request (shaded: alpha answers 503; red: alpha to "
             "standby, green: back on trial, orange: that trial failed)")
fig.tight_layout()
plt.show()""",
    ),
    (
        "md",
        "What the plot shows besides the shaded failure:\n\n"
        "* The late *alpha out* of priority-selection and latency-first is not the 503s: alpha "
        "allows 22 requests (its `x-ratelimit-*` headers say so), and once they are spent it "
        "answers 429. Rate-limit-aware reads those headers and moves to beta *before* the 429, "
        "so it has no such event; load-balanced gives alpha a shrinking share as its headroom "
        "shrinks.\n"
        "* *trial failed*: a model back from its cooldown gets one trial request; alpha was "
        "still failing, so it went straight back to standby, for a longer cooldown.\n"
        "* Latency-first tries gamma, which no request had measured yet, as its exploration "
        "share (one request in ten goes to an unmeasured model); gamma turns out faster than "
        "beta and takes over while alpha is out.",
    ),
    ("code", STOP),
]

BUDGETS = [
    (
        "md",
        "# Budgets, quotas and maintenance windows\n\n"
        "A free tier that runs out, a budget cap, a scheduled maintenance window, and state "
        "that survives a restart. A manual clock moves time instead of waiting for it.",
    ),
    ("code", SERVERS),
    (
        "code",
        """\
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from mesh_core import Mesh, ManualClock

state_file = Path(tempfile.mkdtemp()) / "mesh-state.db"
start = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc).timestamp()   # a Monday morning
config = {
    "providers": providers,
    "models": {
        "alpha.free": {"provider": "alpha"},
        "beta.paid": {"provider": "beta", "pricing": {"per_request": 0.02}},
        "gamma.spare": {"provider": "gamma"},
    },
    "pools": {
        "chat": {
            "capability": "chat-completion",
            "strategy": "priority-selection",
            "deactivation": {
                "request_limit": 5, "quota_window": "daily",      # alpha's free tier: 5 a day
                "budget_limit": 0.1, "budget_window": "monthly",  # at most $0.10 a month each
                "maintenance_window": {"cron": "0 12 * * *", "duration": "30m"},  # daily at noon
            },
        }
    },
    "storage": {"backend": "sqlite", "path": str(state_file)},
}
clock = ManualClock(start)
mesh = Mesh.from_config(config, clock=clock)


def show(title):
    print(f"-- {title} ({datetime.fromtimestamp(clock.time(), timezone.utc):%a %H:%M} UTC)")
    for mid in mesh.models:
        s = mesh.snapshot(mid)
        back = f", back in {s.cooldown_remaining / 3600:.1f}h" if s.cooldown_remaining else ""
        print(f"   {mid:12} {s.status:8} {s.deactivation_reason or '':18} "
              f"requests={s.quota_used} spent=${s.cost_accumulated:.2f}{back}")""",
    ),
    ("md", "## The free tier runs out, then the budget"),
    (
        "code",
        """\
served = [mesh.complete("chat", f"morning {i}").model for i in range(14)]
print(served)
show("after 14 requests")""",
    ),
    (
        "md",
        "## Why gamma? Ask the mesh\n\n"
        "`mesh.explain` is a dry run of the next routing decision: each model's status, why it "
        "is out and until when, what the strategy weighs, and the model it would choose. No "
        "provider is called and nothing changes (`modelmesh explain chat` does the same from the "
        "command line, on the persisted state).",
    ),
    ("code", 'print(mesh.explain("chat"))'),
    ("md", "## A maintenance window at noon"),
    (
        "code",
        """\
from mesh_core import NoAvailableModelError

clock.set(datetime(2026, 6, 1, 12, 10, tzinfo=timezone.utc).timestamp())
print("active:", [m.id for m in mesh.pool("chat").get_active_models()])
try:
    mesh.complete("chat", "at noon")
except NoAvailableModelError as exc:
    print("NoAvailableModelError:", exc)
show("inside the window")
print("explain:", mesh.explain("chat").reason)""",
    ),
    (
        "code",
        """\
clock.set(datetime(2026, 6, 1, 12, 31, tzinfo=timezone.utc).timestamp())
print(mesh.complete("chat", "after the window").model)
show("after the window")""",
    ),
    (
        "md",
        "## State survives a restart\n\nClose the mesh, start a new one on the same file "
        "the next morning: the free tier has reset at midnight, the budget has not.",
    ),
    (
        "code",
        """\
mesh.close()
clock.set(datetime(2026, 6, 2, 8, 0, tzinfo=timezone.utc).timestamp())
mesh = Mesh.from_config(config, clock=clock)
print(mesh.complete("chat", "next morning").model)
show("after the restart")
mesh.close()""",
    ),
    ("code", STOP),
]

NOTEBOOKS = {
    "01_langchain_quickstart.ipynb": LANGCHAIN,
    "02_llamaindex.ipynb": LLAMAINDEX,
    "03_strategies_compared.ipynb": STRATEGIES,
    "04_budgets_quotas_maintenance.ipynb": BUDGETS,
}


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 300) -> nbformat.NotebookNode:
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    return nb


def main(prefixes: list[str]) -> None:
    for name, cells in NOTEBOOKS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        print(f"building {name} ...", flush=True)
        nb = execute(build(name, cells))
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main(sys.argv[1:])
