"""`moodwire bench`: the runtime benchmark (and, with --suite, the classify and end-to-end ones).

Only typer and the standard library are imported here; the benchmark modules load when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

SUITES = ("runtime", "classify", "e2e", "cluster", "count-query")


def bench_command(
    quick: Annotated[bool, typer.Option(help="A small corpus (the first 512 posts): a check that it runs, not a measurement.")] = False,
    variants: Annotated[
        Optional[str],
        typer.Option(help="Runtime variants, comma-separated (default: all; CUDA ones are skipped, with a message, without a GPU)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where the JSON goes (default: bench/results/<suite>.json).")] = None,
    suite: Annotated[
        str,
        typer.Option(
            help="runtime, classify, e2e (starts a tansu broker and a ClickHouse server) or cluster (inserts into "
            "a two-shard ClickHouse cluster, synchronous against asynchronous) or count-query (the alert job's count "
            "queries, a story counted once against per minute, on a ClickHouse server and chDB)."
        ),
    ] = "runtime",
    size: Annotated[Optional[int], typer.Option(help="The first N posts of the corpus (default: all 4,819).")] = None,
    model_dir: Annotated[Optional[Path], typer.Option(help="Model directory (default: the bundled model).")] = None,
    checkpoint: Annotated[
        Optional[Path], typer.Option(help="The checkpoint the model dir was exported from (for the torch and pipeline variants).")
    ] = None,
    scorers: Annotated[
        str, typer.Option(help="e2e: scorer processes in one consumer group, N or N,M,... for the curve (e.g. 1,2).")
    ] = "1",
) -> None:
    """Benchmark the scorer runtime against the usual ways of running the same model, on real posts.

    Every variant runs in its own process on the same texts: the default transformers pipeline, the pipeline with batch_size 32, PyTorch eager, moodwire fp32 and int8 (and fp16 on CUDA).

    Prints a table and writes JSON with posts/s, p50/p99 batch latency, peak RSS, the int8 arithmetic limit measured on this machine, and the machine's description.
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if suite not in SUITES:
        typer.echo(f"moodwire bench: --suite must be one of {', '.join(SUITES)}, not {suite!r}", err=True)
        raise typer.Exit(2)
    from bench import corpus

    n = corpus.QUICK_SIZE if quick and size is None else size
    if suite == "runtime":
        from bench import runtime_bench

        names = runtime_bench._parse_variants(variants)
        unknown = [v for v in names if v not in runtime_bench.VARIANTS]
        if unknown:
            typer.echo(f"moodwire bench: unknown variant(s) {', '.join(unknown)}; known: {', '.join(runtime_bench.VARIANTS)}", err=True)
            raise typer.Exit(2)
        runtime_bench.run(n, names, out or runtime_bench.RESULTS, model_dir, checkpoint, echo=typer.echo)
    elif suite == "classify":
        from bench import classify_bench

        classify_bench.run(n, out or classify_bench.RESULTS, model_dir, checkpoint, echo=typer.echo)
    elif suite == "cluster":
        from bench import cluster_bench

        cluster_bench.run(out=out or cluster_bench.RESULTS, echo=typer.echo)
    elif suite == "count-query":
        from bench import count_query_bench

        count_query_bench.run(out=out or count_query_bench.RESULTS, echo=typer.echo)
    else:
        from bench import e2e_bench

        try:
            counts = e2e_bench.parse_scorers(scorers)
        except ValueError as exc:
            typer.echo(f"moodwire bench: {exc}", err=True)
            raise typer.Exit(2) from None
        e2e_bench.run(
            e2e_bench.E2EConfig.quick() if quick else e2e_bench.E2EConfig(),
            size=n, out=out or e2e_bench.RESULTS, model_dir=model_dir, echo=typer.echo, scorers=counts,
        )


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
