"""A table of bad specs: each exits with code 2, names the path (and line), and carries a hint.

Every case runs the real command line (`orchestrator validate`) in-process; nothing is written.
"""

from __future__ import annotations

import pytest

from orchestrator.cli import main

# (id, spec text, expected "where path" fragment, expected hint fragment)
BASE = "name: demo\n"
CASES = [
    # unknown keys and typos
    ("typo-top", BASE + "modle: {}\n", ":2 modle: unknown key", "did you mean `model`?"),
    ("typo-model", BASE + "model:\n  n_layer: 2\n", ":3 model.n_layer", "`n_layers`"),
    ("typo-heads", BASE + "model:\n  nheads: 2\n", ":3 model.nheads", "`n_heads`"),
    ("typo-warmup", BASE + "schedule:\n  warmup: 3\n", ":3 schedule.warmup", "`warmup_steps`"),
    ("typo-zero", BASE + "deepspeed:\n  zero: 2\n", ":3 deepspeed.zero", "`zero_stage`"),
    ("typo-micro", BASE + "train:\n  micro_batch: 2\n", ":3 train.micro_batch", "`micro_batch_size`"),
    ("typo-lr", BASE + "optimizer:\n  learning_rate: 0.1\n", ":3 optimizer.learning_rate", "`lr`"),
    ("typo-workers", BASE + "cluster:\n  workers: 2\n", ":3 cluster.workers", "`num_workers`"),
    ("typo-ckpt", BASE + "checkpoint:\n  directory: x\n", ":3 checkpoint.directory", "`dir`"),
    (
        "typo-tracking",
        BASE + "tracking:\n  experiment_name: x\n",
        ":3 tracking.experiment_name",
        "`experiment`",
    ),
    ("unknown-section", BASE + "hardware: {}\n", ":2 hardware: unknown key", "allowed keys here"),
    ("missing-name", "model: {}\n", "name: is required", "add `name:`"),
    # wrong types (no coercion)
    ("quoted-int", BASE + 'model:\n  n_layers: "3"\n', ":3 model.n_layers", "remove the quotes"),
    ("quoted-float", BASE + 'optimizer:\n  lr: "0.1"\n', ":3 optimizer.lr", "remove the quotes"),
    ("word-for-int", BASE + "train:\n  epochs: many\n", ":3 train.epochs", "whole number"),
    ("bool-for-int", BASE + "train:\n  epochs: true\n", ":3 train.epochs", None),
    ("float-for-int", BASE + "model:\n  d_model: 64.5\n", ":3 model.d_model", None),
    ("list-for-int", BASE + "model:\n  d_model: [64]\n", ":3 model.d_model", None),
    ("map-for-section", BASE + "model: 3\n", ":2 model", None),
    ("string-stage", BASE + 'deepspeed:\n  zero_stage: "2"\n', ":3 deepspeed.zero_stage", None),
    ("betas-scalar", BASE + "optimizer:\n  betas: 0.9\n", ":3 optimizer.betas", None),
    ("betas-three", BASE + "optimizer:\n  betas: [0.9, 0.99, 0.999]\n", ":3 optimizer.betas", None),
    ("bad-name", "name: 'has spaces'\n", ":1 name", None),
    # out of range
    ("stage-4", BASE + "deepspeed:\n  zero_stage: 4\n", ":3 deepspeed.zero_stage", None),
    ("precision", BASE + "deepspeed:\n  precision: fp8\n", ":3 deepspeed.precision", None),
    ("zero-layers", BASE + "model:\n  n_layers: 0\n", ":3 model.n_layers", None),
    ("negative-lr", BASE + "optimizer:\n  lr: -0.1\n", ":3 optimizer.lr", None),
    ("dropout-1", BASE + "model:\n  dropout: 1.0\n", ":3 model.dropout", None),
    ("val-fraction", BASE + "data:\n  validation_fraction: 0\n", ":3 data.validation_fraction", None),
    ("beta-1", BASE + "optimizer:\n  betas: [0.9, 1.0]\n", ":3 optimizer.betas", "[0.9, 0.999]"),
    ("workers-0", BASE + "cluster:\n  num_workers: 0\n", ":3 cluster.num_workers", None),
    ("vocab-small", BASE + "model:\n  vocab_size: 100\n", ":3 model.vocab_size", None),
    ("corpus", BASE + "data:\n  corpus: wikipedia\n", ":3 data.corpus", None),
    ("backend", BASE + "cluster:\n  backend: slurm\n", ":3 cluster.backend", None),
    # non-finite numbers
    ("nan-lr", BASE + "optimizer:\n  lr: .nan\n", ":3 optimizer.lr", None),
    ("inf-eps", BASE + "optimizer:\n  eps: .inf\n", ":3 optimizer.eps", None),
    ("nan-dropout", BASE + "model:\n  dropout: .nan\n", ":3 model.dropout", None),
    # impossible combinations
    ("heads", BASE + "model:\n  d_model: 96\n  n_heads: 5\n", "model.n_heads", "pick n_heads from"),
    ("eval-vs-log", BASE + "train:\n  log_interval: 4\n  eval_interval: 10\n", "train.eval_interval", "8"),
    ("min-lr", BASE + "optimizer: {lr: 0.001}\nschedule: {min_lr: 0.01}\n", "schedule.min_lr", "lr/10"),
    (
        "warmup",
        BASE + "train: {max_steps: 10}\nschedule: {warmup_steps: 10}\n",
        "schedule.warmup_steps",
        "5-10%",
    ),
    (
        "global-batch",
        BASE + "train: {micro_batch_size: 4, global_batch_size: 32}\ncluster: {num_workers: 2}\n",
        "train.global_batch_size",
        "gradient_accumulation_steps: 4",
    ),
    (
        "global-batch-indivisible",
        BASE + "train: {micro_batch_size: 4, global_batch_size: 30}\ncluster: {num_workers: 2}\n",
        "train.global_batch_size",
        "divisible",
    ),
    # hostile or malformed YAML
    ("python-tag", "name: !!python/object/apply:os.system ['true']\n", ":1 name", "plain values"),
    ("custom-tag", BASE + "model: !include other.yaml\n", ":2 model", "plain values"),
    ("alias", "a: &x 1\nname: *x\n", ":2", "write the value out"),
    ("bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nname: demo\n", ":2", "anchor"),
    ("duplicate", BASE + "train: {}\ntrain: {}\n", ":3 train", "line 2"),
    ("duplicate-nested", BASE + "model:\n  d_model: 64\n  d_model: 32\n", ":4 model.d_model", "line 3"),
    ("not-mapping", "- a\n- b\n", ":1", "quickstart"),
    ("scalar-doc", "just text\n", ":1", "quickstart"),
    ("empty", "", ":1", "quickstart"),
    ("bad-indent", "name: demo\n  model: {}\n", ":2", "indentation"),
    ("unclosed", "name: [demo\n", "not valid YAML", "indentation"),
    ("non-string-key", BASE + "model:\n  1: 2\n", ":3 model", "quote the key"),
]


@pytest.mark.parametrize(("text", "where", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_exits_2_naming_path_and_hint(tmp_path, capsys, text, where, hint):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code = main(["validate", str(spec)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert where in err, err
    if hint:
        assert "hint: " in err and hint in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


def test_huge_document_is_refused_quickly(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: demo\n" + "# padding\n" * 40_000)
    assert main(["validate", str(spec)]) == 2
    assert "at most" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "where", "hint"),
    [
        ("train.epochs=x", "--set train.epochs=x train.epochs", "whole number"),
        ('train.seed="3"', "train.seed", "remove the quotes"),
        ("model.d_modl=64", "model.d_modl: unknown key", "`d_model`"),
        ("epochs", "an override must look like", "--set train.epochs=3"),
        ("name.x=1", "is not a section", None),
        ("model.n_heads=[1", "not valid YAML", None),
    ],
)
def test_bad_override_is_reported_like_a_bad_line(tmp_path, capsys, override, where, hint):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: demo\n")
    assert main(["validate", str(spec), "--set", override]) == 2
    err = capsys.readouterr().err
    assert where in err, err
    if hint:
        assert hint in err, err


@pytest.mark.parametrize("run_name", ["/etc", "../escape", "a/b", ".hidden", "..", "-x"])
def test_a_run_name_is_one_directory_name(capsys, tmp_path, run_name):
    """`tracking.run_name: /etc` used to put the run's checkpoints in /etc."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: demo\ntracking:\n  run_name: '{run_name}'\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert ":3 tracking.run_name" in err and f"got str '{run_name}'" in err


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("not a host; rm -rf /", "is not an IP address"),
        ("localhost", "is not an IP address"),
        ("0.0.0.0", "can be reached from other machines"),
        ("192.168.1.5", "can be reached from other machines"),
    ],
)
def test_cluster_host_is_a_loopback_ip_address(capsys, tmp_path, host, fragment):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: demo\ncluster:\n  host: '{host}'\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert ":3 cluster.host" in err and fragment in err


def test_listening_beyond_loopback_needs_expose_and_prints_a_warning(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: demo\ncluster: {host: 0.0.0.0, expose: true}\n")
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "warning    an embedded Ray will listen on 0.0.0.0, beyond loopback" in out
    spec.write_text("name: demo\ncluster: {host: 127.0.0.2}\n")  # loopback too
    assert main(["validate", str(spec)]) == 0
    assert "warning" not in capsys.readouterr().out
