"""`sca eval`: score infer.json files."""

from __future__ import annotations

import sys
from pathlib import Path


def add(commands) -> None:
    evaluate = commands.add_parser(
        "eval", help="score infer.json files: BLEU, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap), or dense mAP",
        description="Score one or more infer.json files with pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, "
        "ROUGE-L, CIDEr-D). Where an entry has one candidate per SAM mask, the highest-IoU one is scored. "
        "Dense-captioning files (one entry per image with 'predictions') get the DenseCap mAP. Writes "
        "metrics/<file>/metrics.json next to each file and one comparison table (metrics.md, metrics.csv).",
    )
    evaluate.add_argument("files", nargs="+", type=Path, help="infer.json files")
    evaluate.add_argument("--out", type=Path, help="folder for the comparison table (default: the first file's metrics/)")
    evaluate.add_argument("--spice", action="store_true", help="also SPICE (needs Stanford CoreNLP 3.6.0 jars)")
    evaluate.add_argument("--content-recall", action="store_true",
                          help="also noun/verb recall, exact and fuzzy (needs spaCy and en_core_web_lg)")
    evaluate.add_argument("--names", help="comma-separated row names, one per file (default: each file's run "
                          "folder, e.g. runs/vg for runs/vg/infer/infer-vg-densecap-test.json)")
    evaluate.add_argument("--strip-logits", action="store_true",
                          help="also write <file>.no-logits.json, a copy without the IoU scores")
    evaluate.set_defaults(run=run)



def run(args) -> int:
    import warnings

    from rich.console import Console
    from rich.table import Table

    from ..eval.run import comparison_dir, comparison_rows, evaluate_files

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_: print(f"sca eval: warning: {message}", file=sys.stderr)
        names = [n.strip() for n in args.names.split(",")] if args.names else None
        results = evaluate_files(args.files, args.out, spice=args.spice, content_recall=args.content_recall,
                                 strip_logits=args.strip_logits, names=names)
    header, rows = comparison_rows(results)
    table = Table(title="caption metrics (x100)")
    for name in header:
        table.add_column(name, justify="left" if name in ("run", "dataset", "split") else "right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.width = max(console.width, 40 + 12 * len(header))  # a full table beats one squeezed into 80 columns
    console.print(table)
    out = comparison_dir(args.files, args.out)
    print(f"wrote {out / 'metrics.md'}, {out / 'metrics.csv'} and metrics/<file>/metrics.json", file=sys.stderr)
    return 0

