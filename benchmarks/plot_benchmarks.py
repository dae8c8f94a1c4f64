"""Plots and tables of the rows that ``bench_potential.py --json FILE`` wrote, for
docs/benchmarks.md.

    python benchmarks/plot_benchmarks.py FILE [FILE ...] [--out docs/img]

Prints the markdown tables of the page (every system and l_max in the files: allegro_ref
against the official codes where they ran, and allegro_ref alone at the other sizes).

Writes ``benchmark_throughput.png`` (atom·steps/s of every code, per dtype and thread count,
at each size measured with the official codes) and ``benchmark_scaling.png`` (allegro_ref's
time per atom against the number of atoms), from the fcc Cu rows at l_max 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"allegro_ref": "tab:blue", "eager": "tab:red", "compiled": "tab:orange"}


def throughput(rows: list[dict], out: Path) -> None:
    compared = sorted({r["atoms"] for r in rows if r["code"] != "allegro_ref"})
    if not compared:  # allegro_ref alone: nothing to compare
        return
    settings = sorted({(r["dtype"], r["threads"]) for r in rows if r["atoms"] in compared})
    fig, axes = plt.subplots(1, len(compared), figsize=(5 * len(compared), 3.6), squeeze=False)
    for ax, n_atoms in zip(axes[0], compared, strict=True):
        for k, code in enumerate(COLORS):
            values = []
            for dtype, threads in settings:
                match = [
                    r
                    for r in rows
                    if (r["code"], r["atoms"], r["dtype"], r["threads"])
                    == (code, n_atoms, dtype, threads)
                ]
                values.append(match[-1]["atoms"] / match[-1]["median_s"] if match else 0.0)
            x = [i + (k - 1) * 0.27 for i in range(len(settings))]
            ax.bar(x, values, width=0.27, color=COLORS[code], label=code)
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels([f"{d}\n{t} core{'s' * (t > 1)}" for d, t in settings])
        ax.set_title(f"fcc Cu, {n_atoms} atoms")
        ax.set_ylabel("atom·steps / s (higher is better)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out / "benchmark_throughput.png", dpi=120)


def scaling(rows: list[dict], out: Path) -> None:
    ours = [r for r in rows if r["code"] == "allegro_ref"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for dtype, threads in sorted({(r["dtype"], r["threads"]) for r in ours}):
        series = sorted(
            (r["atoms"], 1e3 * r["median_s"] / r["atoms"])
            for r in ours
            if (r["dtype"], r["threads"]) == (dtype, threads)
        )
        label = f"{dtype}, {threads} core{'s' * (threads > 1)}"
        ax.plot(*zip(*series, strict=True), "o-", label=label)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])
    ax.set_xlabel("atoms (fcc Cu, 42 edges per atom)")
    ax.set_ylabel("ms per atom per step")
    ax.set_title("allegro_ref: time per atom")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "benchmark_scaling.png", dpi=120)


def load(row: dict) -> str:
    """The cores other processes kept busy during the row, and whether that flags it loaded
    (bench_potential.py's rule); "–" for rows measured before the script recorded it."""
    if row.get("other_cores") is None:
        return "–" if "loaded" not in row else f"load {row['load_1min']}"
    return f"{row['other_cores']:.2f}" + (" **loaded**" if row["loaded"] else "")


def tables(rows: list[dict]) -> None:
    """Markdown: per (system, l_max), one line per (atoms, dtype, threads) with allegro_ref's
    time and the official codes' times and ratios where they ran; then allegro_ref alone."""

    def key(r):
        return (r.get("system", "cu"), r.get("lmax", 2))

    for system, lmax in sorted({key(r) for r in rows}):
        group = [r for r in rows if key(r) == (system, lmax)]
        by_setting = {}
        for r in group:
            by_setting.setdefault((r["atoms"], r["dtype"], r["threads"]), {})[r["code"]] = r
        model = "tutorial config (l_max 1)" if system == "ethanol" else f"l_max {lmax}"
        print(f"\n{system}, {model}\n")
        print(
            "| atoms | edges | dtype | cores | allegro_ref s/step | atom·steps/s | eager s/step "
            "| × | compiled s/step | × | peak GB: ours / eager / compiled | other cores |"
        )
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for (atoms, dtype, threads), codes in sorted(by_setting.items()):
            ours = codes["allegro_ref"]
            cells = [str(atoms), f"{ours['edges']:,}".replace(",", " "), dtype, str(threads)]
            cells += [f"{ours['median_s']:.3g}", f"{atoms / ours['median_s']:.0f}"]
            peaks = [f"{ours['peak_rss_gb']:.2f}"]
            for code in ("eager", "compiled"):
                if code in codes:
                    seconds = codes[code]["median_s"]
                    cells += [f"{seconds:.3g}", f"{seconds / ours['median_s']:.1f}"]
                    peaks.append(f"{codes[code]['peak_rss_gb']:.2f}")
                else:
                    cells += ["–", "–"]
                    peaks.append("–")
            print("| " + " | ".join(cells + [" / ".join(peaks), load(ours)]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img"
    )
    args = parser.parse_args()
    rows = [r for path in args.results for r in json.loads(path.read_text())["rows"]]
    tables(rows)
    cu = [r for r in rows if r.get("system", "cu") == "cu" and r.get("lmax", 2) == 2]
    args.out.mkdir(parents=True, exist_ok=True)
    throughput(cu, args.out)
    scaling(cu, args.out)


if __name__ == "__main__":
    main()
