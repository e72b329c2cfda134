"""The run ticket a cluster's driver receives holds no secret: references, resolved on the cluster."""

from __future__ import annotations

from orchestrator.lifecycle import RunTicket, plan_from_ticket
from orchestrator.spec import parse_spec
from tests.conftest import prepared_plan

SECRET = "ticket-secret-4821"


def test_the_ticket_keeps_references_and_the_cluster_resolves_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKET_PASSWORD", SECRET)
    text = "name: t\ntracking:\n  uri: 'http://me:${env:TICKET_PASSWORD}@127.0.0.1:5000'\n"
    plan = prepared_plan(parse_spec(text), tmp_path).with_run_id("f" * 32)
    ticket = RunTicket.of(plan, cwd=str(tmp_path))
    assert SECRET not in ticket.to_json()
    assert ticket.tracking_uri == "http://me:${env:TICKET_PASSWORD}@127.0.0.1:5000"
    path = tmp_path / "run.json"
    path.write_text(ticket.to_json())
    on_cluster = plan_from_ticket(RunTicket.read(path))
    assert on_cluster.tracking_uri == f"http://me:{SECRET}@127.0.0.1:5000"
    assert (on_cluster.run_name, on_cluster.checkpoint_dir) == (plan.run_name, plan.checkpoint_dir)
