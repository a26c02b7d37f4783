"""Fine-tune one encoder with its heads on rows that may carry only some of the labels: post
polarity, emotion, and a stance per ticker (the rows with targets)."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tokenizers import Tokenizer
from torch import nn

from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from scorer.runtime import available_cores, cpu_model
from scorer.training.args import TrainingArguments
from scorer.mentions import MentionFinder, Span, token_positions
from scorer.training.augment import Company, compose, composable, swap_candidates, swap_symbols, unswappable
from scorer.training.data import Example, load_labelled
from scorer.training.metrics import classification_report
from scorer.training.modeling import CheckpointInfo, SentimentModel, build_model, resolve_base, save_checkpoint

log = logging.getLogger(__name__)

IGNORE = -100  # a row without this label contributes nothing to that head's loss
CHECKPOINT_DIR = "checkpoint"
REPORT_FILE = "run_report.json"


SPAN_SOURCES = ("finder", "labels")
STANCE_ORIGIN = "stance"  # the hand-written stance set: what stance metrics are reported on


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    polarity: np.ndarray  # label index or IGNORE
    emotion: np.ndarray
    origins: list[str]
    # Per row, one (token positions, stance index) per labelled target; positions are empty
    # where no span was found (or truncation cut it off): no stance loss, and at evaluation the
    # post's polarity stands in, as at run time.
    targets: list[list[tuple[list[int], int]]]
    kinds: list[str | None]


def label_spans(text: str, mentions: Sequence[str]) -> list[Span]:
    """Every occurrence of each labelled mention, on word edges where it has them."""
    import re

    out: list[Span] = []
    for mention in mentions:
        found = [m.span() for m in re.finditer(r"(?<!\w)" + re.escape(mention) + r"(?!\w)", text)]
        out += found or [m.span() for m in re.finditer(re.escape(mention), text)]
    return sorted(set(out))


def encode(
    rows: Sequence[Example], tokenizer: Tokenizer, finder: MentionFinder | None = None, span_source: str = "finder"
) -> Encoded:
    """Token ids and labels; target spans from the run-time span finder (what the scorer will
    see) or from the labelled mentions."""
    if span_source not in SPAN_SOURCES:
        raise ValueError(f"span_source must be one of {SPAN_SOURCES}")
    encodings = tokenizer.encode_batch([r.text for r in rows])
    pol = np.array([POLARITY_LABELS.index(r.polarity) if r.polarity else IGNORE for r in rows], dtype=np.int64)
    emo = np.array([EMOTION_LABELS.index(r.emotion) if r.emotion else IGNORE for r in rows], dtype=np.int64)
    targets: list[list[tuple[list[int], int]]] = []
    for row, enc in zip(rows, encodings):
        if not row.targets:
            targets.append([])
            continue
        if span_source == "finder" and finder is not None:
            spans = finder.find(row.text, [t.symbol for t in row.targets])
        else:
            spans = [label_spans(row.text, t.mentions) for t in row.targets]
        targets.append([
            (token_positions(enc.offsets, s, enc.special_tokens_mask), POLARITY_LABELS.index(t.stance))
            for t, s in zip(row.targets, spans)
        ])
    return Encoded(
        ids=[e.ids for e in encodings], polarity=pol, emotion=emo, origins=[r.origin for r in rows],
        targets=targets, kinds=[r.kind for r in rows],
    )


def load_tokenizer(base_dir: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return tok


def class_weights(labels: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    """(total / (n_classes * count)) ** power over the rows that carry the label; 1.0 when power is 0."""
    present = labels[labels != IGNORE]
    counts = np.bincount(present, minlength=n_classes).astype(float)
    counts = np.maximum(counts, 1.0)
    weights = (counts.sum() / (n_classes * counts)) ** power
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def collate(enc: Encoded, index: Sequence[int]) -> dict[str, torch.Tensor]:
    rows = [enc.ids[i] for i in index]
    width = max(len(r) for r in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        input_ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[j, : len(r)] = 1
    n_targets = max(1, max(len(enc.targets[i]) for i in index))
    target_mask = torch.zeros((len(rows), n_targets, width), dtype=torch.float32)
    stance = torch.full((len(rows), n_targets), IGNORE, dtype=torch.long)
    for j, i in enumerate(index):
        for k, (positions, label) in enumerate(enc.targets[i]):
            if positions:
                target_mask[j, k, positions] = 1.0
                stance[j, k] = label
    idx = np.asarray(index)
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "target_mask": target_mask,
        "polarity": torch.from_numpy(enc.polarity[idx]),
        "emotion": torch.from_numpy(enc.emotion[idx]),
        "stance": stance,
    }


def stance_labels(enc: Encoded) -> np.ndarray:
    """Every stance label that has token positions (what the loss sees)."""
    return np.array([label for row in enc.targets for positions, label in row if positions], dtype=np.int64)


def epoch_batches(enc: Encoded, batch_size: int, repeats: dict[str, int], rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: sorting inside shuffled chunks of 50 batches keeps
    padding small (the CPU's time goes to real tokens) while batches stay varied."""
    order = [i for i, origin in enumerate(enc.origins) for _ in range(repeats.get(origin, 1))]
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(enc.ids[i]))
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    if not bool((labels != IGNORE).any()):
        return None
    return nn.functional.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE)


@dataclass(frozen=True)
class Logits:
    polarity: np.ndarray  # [rows, 3]
    emotion: np.ndarray  # [rows, 7]
    stance: list[np.ndarray]  # per row [its targets, 3]; empty arrays without a stance head


@torch.no_grad()
def predict_logits(model: SentimentModel, enc: Encoded, batch_size: int = 64) -> Logits:
    model.eval()
    order = sorted(range(len(enc.ids)), key=lambda i: len(enc.ids[i]))
    pol = np.zeros((len(order), len(POLARITY_LABELS)), dtype=np.float32)
    emo = np.zeros((len(order), len(EMOTION_LABELS)), dtype=np.float32)
    stance = [np.zeros((len(t) if model.stance_head is not None else 0, 3), dtype=np.float32) for t in enc.targets]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        b = collate(enc, idx)
        types = torch.zeros_like(b["input_ids"])
        if model.stance_head is not None:
            p, e, s = model.forward_targets(b["input_ids"], b["attention_mask"], types, b["target_mask"])
            for j, i in enumerate(idx):
                stance[i] = s[j, : len(enc.targets[i])].numpy()
        else:
            p, e = model(b["input_ids"], b["attention_mask"], types)
        pol[idx] = p.numpy()
        emo[idx] = e.numpy()
    return Logits(pol, emo, stance)


@dataclass(frozen=True)
class StanceOutcome:
    """One entry per labelled target, in row order."""

    gold: list[int]
    pred: list[int]
    disagrees: list[bool]  # its row's targets have different gold stances
    row: list[int]
    has_span: list[bool]


def stance_predictions(enc: Encoded, logits: Logits) -> StanceOutcome:
    """Gold and predicted stance per labelled target. A target without a span, or any target of a
    model without a stance head, takes the post's predicted polarity, as the runtime does."""
    out = StanceOutcome([], [], [], [], [])
    post = logits.polarity.argmax(1)
    for i, targets in enumerate(enc.targets):
        differ = len({label for _, label in targets}) > 1
        for k, (positions, label) in enumerate(targets):
            read = bool(positions) and len(logits.stance[i]) > k
            out.gold.append(label)
            out.pred.append(int(logits.stance[i][k].argmax()) if read else int(post[i]))
            out.disagrees.append(differ)
            out.row.append(i)
            out.has_span.append(bool(positions))
    return out


def evaluate_encoded(model: SentimentModel, enc: Encoded, focus_origin: str | None = None) -> dict[str, Any]:
    """Macro-F1 per head, overall and per origin, and the `score` that picks the best checkpoint:
    the mean of polarity and emotion macro-F1 on focus_origin (the data the product is about),
    polarity macro-F1 on everything (so general text is not forgotten) and, with a stance head,
    stance macro-F1 on the stance set's targets. Without focus rows, the mean of the heads overall."""
    logits = predict_logits(model, enc)
    pol, emo = logits.polarity, logits.emotion
    out: dict[str, Any] = {}
    for head, head_logits, gold, labels in (
        ("polarity", pol, enc.polarity, POLARITY_LABELS),
        ("emotion", emo, enc.emotion, EMOTION_LABELS),
    ):
        keep = gold != IGNORE
        if not keep.any():
            continue
        pred = head_logits.argmax(1)
        rep = classification_report([labels[i] for i in gold[keep]], [labels[i] for i in pred[keep]], labels)
        out[head] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "n": rep["n"]}
        origins = np.array(enc.origins)
        for origin in sorted(set(origins[keep])):
            sel = keep & (origins == origin)
            r = classification_report([labels[i] for i in gold[sel]], [labels[i] for i in pred[sel]], labels)
            out[head][f"macro_f1[{origin}]"] = r["macro_f1"]
    stance = stance_predictions(enc, logits)
    on_set = [j for j, i in enumerate(stance.row) if enc.origins[i] == STANCE_ORIGIN]
    if on_set:
        labels = POLARITY_LABELS

        def report(sel: list[int]) -> dict[str, Any]:
            return classification_report(
                [labels[stance.gold[j]] for j in sel], [labels[stance.pred[j]] for j in sel], labels
            )

        rep = report(on_set)
        rep_d = report([j for j in on_set if stance.disagrees[j]])
        out["stance"] = {
            "macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "n": rep["n"],
            "macro_f1[disagreeing]": rep_d["macro_f1"], "n[disagreeing]": rep_d["n"],
            "share_with_span": round(sum(stance.has_span[j] for j in on_set) / len(on_set), 4),
        }
    key = f"macro_f1[{focus_origin}]"
    parts = [out[h][key] for h in ("polarity", "emotion") if h in out and key in out[h]]
    if parts and "polarity" in out:
        parts.append(out["polarity"]["macro_f1"])
    else:
        parts = [out[h]["macro_f1"] for h in ("polarity", "emotion") if h in out]
    if "stance" in out and model.stance_head is not None:
        parts.append(out["stance"]["macro_f1"])
    out["score"] = float(np.mean(parts)) if parts else 0.0
    return out


def _limit(rows: list[Example], n: int | None, rng: random.Random) -> list[Example]:
    if n is None or len(rows) <= n:
        return rows
    return rng.sample(rows, n)


def train(args: TrainingArguments, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    started = time.monotonic()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or available_cores())
    rng = random.Random(args.seed)

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args.save(out_dir / "training_args.json")

    base_dir = resolve_base(args.base_model)
    tokenizer = load_tokenizer(base_dir, args.max_length)
    train_rows = _limit(load_labelled(Path(args.train_file)), args.max_train_examples, rng)
    val_rows = _limit(load_labelled(Path(args.validation_file)), args.max_validation_examples, rng)
    with_stance = args.stance_pooling is not None
    # Validation always reads the spans the runtime will see; training reads the ones asked for.
    finder = MentionFinder.load()
    train_enc = encode(train_rows, tokenizer, finder, args.stance_spans)
    val_enc = encode(val_rows, tokenizer, finder, "finder")
    companies: list[Company] = []
    keep_symbols: frozenset[str] = frozenset()
    if with_stance and args.symbol_swap_prob > 0:
        companies = swap_candidates(finder.linker.table)
        keep_symbols = unswappable(finder.linker.table)
    console.print(
        f"train rows {len(train_rows)} {dict(Counter(r.origin for r in train_rows))}; validation rows {len(val_rows)}; "
        f"train targets {sum(len(t) for t in train_enc.targets)} ({len(stance_labels(train_enc))} with a span)"
    )

    model = build_model(
        args.base_model, seed=args.seed, attn_implementation="sdpa", stance_pooling=args.stance_pooling
    )
    model.dropout.p = args.dropout
    pol_w = class_weights(train_enc.polarity, len(POLARITY_LABELS), args.class_weight_power)
    emo_w = class_weights(train_enc.emotion, len(EMOTION_LABELS), args.class_weight_power)
    stance_w = class_weights(stance_labels(train_enc), len(POLARITY_LABELS), args.class_weight_power)

    def epoch_encoding() -> Encoded:
        """The training rows of one epoch: each stance row's tickers swapped for others with
        probability symbol_swap_prob, and composed_per_epoch pairs of single-ticker rows
        stitched into two-ticker posts (fresh draws every epoch)."""
        if not with_stance or (not companies and not args.composed_per_epoch):
            return train_enc
        rows = [
            swap_symbols(r, companies, rng, keep_symbols) if r.targets and rng.random() < args.symbol_swap_prob else r
            for r in train_rows
        ]
        singles = composable(rows)
        made: list[Example] = []
        while singles and len(made) < args.composed_per_epoch:
            pair = compose(rng.choice(singles), rng.choice(singles), rng)
            if pair is not None:
                made.append(pair)
        return encode(rows + made, tokenizer, finder, args.stance_spans)

    steps_per_epoch = len(epoch_batches(train_enc, args.batch_size, args.origin_repeats, random.Random(0)))
    if with_stance:
        steps_per_epoch += math.ceil(args.composed_per_epoch * args.origin_repeats.get("composed", 1) / args.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * args.epochs))
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    warmup = max(1, int(total_steps * args.warmup_ratio))
    head_params = list(model.polarity_head.parameters()) + list(model.emotion_head.parameters())
    pretrained = list(model.encoder.parameters())
    if model.stance_head is not None:
        # A layer copied from the encoder learns at the encoder's pace; the fresh parts faster.
        for name, param in model.stance_head.named_parameters():
            (pretrained if name.startswith("layer.") else head_params).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": pretrained, "lr": args.learning_rate},
            {"params": head_params, "lr": args.head_learning_rate},
        ],
        weight_decay=args.weight_decay,
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    budget_s = args.max_train_minutes * 60 if args.max_train_minutes else None

    def set_lr(step: int, elapsed_s: float) -> None:
        # Linear warmup, then linear decay to 0 over whichever runs out first, steps or time
        # budget: a run cut short by a busy machine still ends on a small learning rate.
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            done = (step - warmup) / max(1, total_steps - warmup)
            if budget_s:
                done = max(done, elapsed_s / budget_s)
            factor = max(0.0, 1.0 - done)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor

    ckpt_dir = out_dir / CHECKPOINT_DIR
    info = CheckpointInfo(
        base_model=args.base_model, max_length=args.max_length, model_version=args.model_version,
        stance_pooling=args.stance_pooling,
    )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "step": 0}
    bad_evals = 0
    step = 0
    seen = 0
    stop_reason = "completed"
    deadline = started + args.max_train_minutes * 60 if args.max_train_minutes else None
    train_started = time.monotonic()

    def run_eval() -> bool:
        nonlocal bad_evals, best
        metrics = evaluate_encoded(model, val_enc, args.selection_origin)
        metrics.update(step=step, examples_seen=seen, minutes=round((time.monotonic() - started) / 60, 2))
        history.append(metrics)
        improved = metrics["score"] > best["score"]
        if improved:
            best = {"score": metrics["score"], "step": step, "metrics": metrics}
            save_checkpoint(model, ckpt_dir, info, base_dir / "tokenizer.json")
            bad_evals = 0
        else:
            bad_evals += 1
        console.print(
            f"step {step}: polarity F1 {metrics.get('polarity', {}).get('macro_f1', float('nan')):.4f} "
            f"emotion F1 {metrics.get('emotion', {}).get('macro_f1', float('nan')):.4f} "
            f"stance F1 {metrics.get('stance', {}).get('macro_f1', float('nan')):.4f} "
            f"score {metrics['score']:.4f}{' (best, saved)' if improved else ''}"
        )
        model.train()
        return bad_evals >= args.early_stopping_patience

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} ex/s"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    with progress:
        task = progress.add_task("train", total=total_steps, loss=0.0, rate=0.0)
        model.train()
        epoch = 0
        running = 0.0
        while step < total_steps and stop_reason == "completed":
            enc = epoch_encoding()
            for batch_index in epoch_batches(enc, args.batch_size, args.origin_repeats, rng):
                set_lr(step, time.monotonic() - started)
                b = collate(enc, batch_index)
                types = torch.zeros_like(b["input_ids"])
                losses = []
                if with_stance:
                    pol_logits, emo_logits, stance_logits = model.forward_targets(
                        b["input_ids"], b["attention_mask"], types, b["target_mask"]
                    )
                    ls = masked_loss(stance_logits.reshape(-1, len(POLARITY_LABELS)), b["stance"].reshape(-1), stance_w)
                    if ls is not None:
                        losses.append(args.stance_loss_weight * ls)
                else:
                    pol_logits, emo_logits = model(b["input_ids"], b["attention_mask"], types)
                lp = masked_loss(pol_logits, b["polarity"], pol_w)
                if lp is not None:
                    losses.append(lp)
                le = masked_loss(emo_logits, b["emotion"], emo_w)
                if le is not None:
                    losses.append(args.emotion_loss_weight * le)
                if losses:
                    loss = torch.stack(losses).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    running = 0.9 * running + 0.1 * float(loss.detach()) if step else float(loss.detach())
                step += 1
                seen += len(batch_index)
                rate = seen / max(1e-9, time.monotonic() - train_started)
                progress.update(task, advance=1, loss=running, rate=rate)
                if not console.is_terminal and step % 50 == 0:
                    # A log file gets no live bar; leave a trail instead.
                    console.print(f"step {step}/{total_steps} loss {running:.4f} {rate:.1f} ex/s")
                if step % args.eval_every_steps == 0 or step >= total_steps:
                    if run_eval():
                        stop_reason = "early_stopping"
                        break
                if step >= total_steps:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stop_reason = "time_budget"
                    break
            epoch += 1
    if not history or history[-1]["step"] != step:
        run_eval()

    elapsed = time.monotonic() - started
    report = {
        "model_version": args.model_version,
        "args": args.to_dict(),
        "train_rows": len(train_rows),
        "train_rows_by_origin": dict(Counter(r.origin for r in train_rows)),
        "validation_rows": len(val_rows),
        "steps": step,
        "planned_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs_completed": round(step / steps_per_epoch, 2),
        "examples_seen": seen,
        "examples_per_second": round(seen / max(1e-9, time.monotonic() - train_started), 2),
        "stop_reason": stop_reason,
        "best_step": best["step"],
        "best_validation": best.get("metrics"),
        "history": history,
        "minutes": round(elapsed / 60, 2),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{cpu_model()}, {available_cores()} cores",
        "class_weights": {"polarity": pol_w.tolist(), "emotion": emo_w.tolist(), "stance": stance_w.tolist()},
        "train_targets": sum(len(t) for t in train_enc.targets),
        "train_targets_with_span": int(len(stance_labels(train_enc))),
        "checkpoint": str(ckpt_dir),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(
        f"done in {report['minutes']} min ({stop_reason}); best step {best['step']} score {best['score']:.4f}; "
        f"checkpoint {ckpt_dir}"
    )
    return report
