"""OpenTelemetry spans (GenAI conventions) and Prometheus metrics."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from mesh_core import Mesh
from mesh_core._errors import ContentPolicyError
from mesh_core.testing import faults
from tests.conftest import config_for

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield


@pytest.fixture
def spans():
    EXPORTER.clear()
    return EXPORTER


def test_a_span_per_request_and_a_child_per_attempt(servers, spans):
    mesh = Mesh.from_config(config_for(servers, pool={"retry": {"max_attempts": 1}}))
    servers[0].set("m1", faults.server_error(503))
    mesh.complete("chat", "hi", temperature=0.5)
    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.name == "chat chat")
    attempts = [s for s in finished if s.parent and s.parent.span_id == request.context.span_id]
    assert [s.name for s in attempts] == ["chat m1", "chat m2"]
    assert attempts[0].attributes["error.type"] == "server_error"
    assert attempts[0].status.status_code == trace.StatusCode.ERROR
    assert attempts[1].attributes["gen_ai.provider.name"] == "p2"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.temperature"] == 0.5
    assert request.attributes["gen_ai.response.model"] == "p2.m2"
    assert request.attributes["gen_ai.usage.output_tokens"] > 0
    assert request.kind == trace.SpanKind.CLIENT
    mesh.close()


def test_embedding_requests_are_embeddings_spans(spans):
    from mesh_core.testing import FaultServer
    from tests import embedding_mesh

    with FaultServer() as server:
        models = {
            "oa.e1": embedding_mesh.model("oa", "e1", "s/e@8"),
            "oa2.e2": embedding_mesh.model("oa2", "e2", "s/e@8"),
        }
        server.set("e1", faults.server_error(503))
        with Mesh.from_config(embedding_mesh.config(server, models)) as mesh:
            assert mesh.embed("emb", ["a", "b"]).model == "oa2.e2"
    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.name == "embeddings emb")
    attempts = [s for s in finished if s.parent and s.parent.span_id == request.context.span_id]
    assert [s.name for s in attempts] == ["embeddings e1", "embeddings e2"]
    assert {s.attributes["gen_ai.operation.name"] for s in (request, *attempts)} == {"embeddings"}
    assert attempts[0].attributes["error.type"] == "server_error"


def test_streams_and_errors_end_their_spans(servers, spans):
    mesh = Mesh.from_config(config_for(servers))
    list(mesh.stream("chat", "hi"))
    servers[0].set("m1", faults.content_policy())
    with pytest.raises(ContentPolicyError):
        mesh.complete("chat", "bad")
    requests = [s for s in spans.get_finished_spans() if s.name == "chat chat"]
    assert len(requests) == 2
    assert requests[0].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert requests[1].attributes["error.type"] == "content_policy"
    mesh.close()


class _SpanSpy:
    """Wraps a provider; notes the span that is current while each call is made."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _note(self):
        self.seen.append(trace.get_current_span().name)

    def complete(self, *args):
        self._note()
        return self.inner.complete(*args)

    async def acomplete(self, *args):
        self._note()
        return await self.inner.acomplete(*args)

    def stream(self, *args):
        self._note()
        return self.inner.stream(*args)

    async def astream(self, *args):
        self._note()
        return await self.inner.astream(*args)


async def test_the_attempt_span_is_current_during_the_call(servers, spans):
    """So spans made inside the call (an httpx instrumentation's) nest under the attempt."""
    from mesh_core._config import load_config
    from mesh_core.providers import create_provider

    cfg = load_config(config_for(servers))
    spy = _SpanSpy(create_provider("p1", cfg.providers["p1"]))
    mesh = Mesh(cfg, providers={"p1": spy})
    mesh.complete("chat", "hi")
    list(mesh.stream("chat", "hi"))
    await mesh.acomplete("chat", "hi")
    [c async for c in mesh.astream("chat", "hi")]
    assert spy.seen == ["chat m1"] * 4
    assert trace.get_current_span() is trace.INVALID_SPAN  # restored after each call
    await mesh.aclose()


def test_tracing_can_be_turned_off(servers, spans):
    cfg = config_for(servers)
    cfg["observability"] = {"tracing": "off"}
    mesh = Mesh.from_config(cfg)
    mesh.complete("chat", "hi")
    assert spans.get_finished_spans() == ()
    mesh.close()


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_prometheus_metrics(servers):
    before = {
        "ok": sample("modelmesh_attempts_total", pool="chat", model="p2.m2", outcome="success"),
        "bad": sample(
            "modelmesh_attempts_total", pool="chat", model="p1.m1", outcome="server_error"
        ),
        "off": sample("modelmesh_deactivations_total", model="p1.m1", reason="error_threshold"),
        "lat": sample("modelmesh_request_latency_seconds_count", pool="chat", model="p2.m2"),
    }
    mesh = Mesh.from_config(
        config_for(
            servers,
            pool={"deactivation": {"retry_limit": 1}, "retry": {"max_attempts": 1}},
            models={"p2.m2": {"pricing": {"per_request": 0.25}}},
        )
    )
    servers[0].set("m1", faults.server_error(503))
    mesh.complete("chat", "hi")
    mesh.complete("chat", "hi")
    assert (
        sample("modelmesh_attempts_total", pool="chat", model="p2.m2", outcome="success")
        - before["ok"]
        == 2
    )
    assert (
        sample("modelmesh_attempts_total", pool="chat", model="p1.m1", outcome="server_error")
        - before["bad"]
        == 1
    )
    assert (
        sample("modelmesh_deactivations_total", model="p1.m1", reason="error_threshold")
        - before["off"]
        == 1
    )
    assert (
        sample("modelmesh_request_latency_seconds_count", pool="chat", model="p2.m2")
        - before["lat"]
        == 2
    )
    assert sample("modelmesh_cost_usd_total", pool="chat", model="p2.m2") >= 0.5
    list(mesh.stream("chat", "hi"))  # a streamed success counts too
    assert (
        sample("modelmesh_attempts_total", pool="chat", model="p2.m2", outcome="success")
        - before["ok"]
        == 3
    )
    mesh.close()


def test_prometheus_scrape_text(servers):
    """What a Prometheus server reads: cumulative buckets ending in +Inf, _sum and _count."""
    from prometheus_client import generate_latest

    cfg = config_for(servers)
    cfg["pools"]["scrape"] = {"models": ["p1.m1"]}
    with Mesh.from_config(cfg) as mesh:
        for _ in range(3):
            mesh.complete("scrape", "hi")
    text = generate_latest().decode()
    labels = 'model="p1.m1",pool="scrape"'
    buckets = [
        line for line in text.splitlines() if line.startswith("modelmesh_request_latency_seconds_b")
    ]
    mine = [line for line in buckets if labels in line]
    assert mine[0].startswith('modelmesh_request_latency_seconds_bucket{le="0.005",')
    assert mine[-1] == f'modelmesh_request_latency_seconds_bucket{{le="+Inf",{labels}}} 3.0'
    counts = [float(line.rsplit(" ", 1)[1]) for line in mine]
    assert counts == sorted(counts)  # cumulative
    assert f"modelmesh_request_latency_seconds_count{{{labels}}} 3.0" in text
    assert 'modelmesh_attempts_total{model="p1.m1",outcome="success",pool="scrape"} 3.0' in text
    assert "# TYPE modelmesh_attempts_total counter" in text
    assert "# TYPE modelmesh_request_latency_seconds histogram" in text
