"""Rubanova et al. (2019) toy periodic data: interpolation and extrapolation MSE of eight models.

Regenerate the report (the fourteen (model, task) runs, two at a time, about 30 minutes from
nothing on the 2-core CPU; a few minutes when the trained models are cached)::

    .venv/bin/python experiments/periodic.py --iters 2000 --aggregate-prior 5000 \
        --output reports/periodic.md

The same over three seeds, each cell the mean and (min-max) over them, the figures seed 0's
(about an hour from nothing; the seed-0 runs are shared with the report above)::

    .venv/bin/python experiments/periodic.py --iters 2000 --aggregate-prior 5000 \
        --seeds 0 1 2 --output reports/periodic_seeds.md

The previous version of the report trained 500 iterations per run (``--iters 500``); its
tables are kept in ``reports/periodic_notes.md``.

Smoke run (about a minute, numbers meaningless)::

    .venv/bin/python experiments/periodic.py --quick --output /tmp/periodic.md

Trained models are cached in ``--workdir`` (default ``runs/periodic``), so a rerun only
rescores. ``--aggregate-prior K`` also scores each trained Latent ODE under its
aggregate-posterior prior (the mixture of its encoder's q(z0) over the 800 training series,
fully observed as the task conditions them: all 100 points for interpolation, the first half
for extrapolation), K paths drawn from it and weighted by the likelihood of the conditioning
points (`LatentODE.predict(importance=True, prior=...)`), and adds the analog control: the
training series themselves, weighted by the same likelihood (std 0.01), no model.

Protocol: ``make_periodic`` (1000 series, data seed 0; series 0-799 train, 800-999 test). One
training run per (model, task); each batch conditions on a fraction of its points drawn per
batch from {10, 20, 30, 50}%, and every fraction is scored separately on the test series with
the same seeded conditioning points for all models. Interpolation: condition on the fraction
of all 100 points, reconstruct all of them. Extrapolation: condition on the fraction of the
points in the first half of [0, 5], predict the second half. The models whose names end
with ", both halves" run extrapolation only: the ELBO of their training also scores the
conditioning points, so that the posterior weighting has a trained likelihood to use. The
", anchored last" models infer the latent state at the last conditioning time instead of t0
(``anchor="last"``; session 20): the encoder runs forwards, the ODE is solved both ways.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from report_notes import notes
from torch import Tensor, nn

from latentode.data import (
    IrregularBatch,
    Split,
    align_last,
    make_periodic,
    split_extrapolation,
    split_interpolation,
    subsample_observations,
)
from latentode.nn import (
    ODERNN,
    AggregatePosterior,
    GRUBaseline,
    LatentODE,
    LatentODEConfig,
    SolverSettings,
)
from latentode.plots import plot_posterior_samples
from latentode.systems import ForecastMetrics

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
TASKS = ("interpolation", "extrapolation")
MODELS = (
    "Latent ODE (ODE-RNN enc.)",
    "Latent ODE (RNN enc.)",
    "Latent ODE (RNN enc. + time)",
    "ODE-RNN",
    "RNN (GRU)",
    "Latent ODE (ODE-RNN enc.), both halves",
    "Latent ODE (ODE-RNN enc.), anchored last",
    "Latent ODE (ODE-RNN enc.), anchored last, both halves",
)
# Extrapolation only: trained to reconstruct the conditioning points as well as to predict
# the second half, so that p(observed | z0) is a trained likelihood (see `loss_fn`). A model
# whose name ends with `BOTH` is trained so (`trained`).
BOTH = ", both halves"
BOTH_HALVES = "Latent ODE (ODE-RNN enc.)" + BOTH
# z at the last conditioning time, the encoder run forwards (`LatentODEConfig.anchor`).
ANCHORED = ", anchored last"
IW_SAMPLES = 100
IW = ", importance-weighted"  # suffix of the rows scored with `predict(importance=True)`
AGG = ", aggregate-posterior prior"  # suffix of the rows scored with `predict(prior=...)`
ANALOG = "Analog control (training series, no model)"


def make_split(batch: IrregularBatch, task: str, frac: float, gen: torch.Generator) -> Split:
    """Interpolation or extrapolation split of ``batch`` observing ``frac`` of the points."""
    if task == "interpolation":
        return split_interpolation(batch, frac, generator=gen)
    split = split_extrapolation(batch)
    observed = subsample_observations(split.observed, frac, generator=gen)
    return Split(observed, split.target, split.heldout_mask)


def baseline_depth(args: argparse.Namespace) -> int:
    """Hidden layers of the ODE-RNN baseline's vector field: ``--baseline-ode-depth``, else
    ``--ode-depth`` (1 where the caller's arguments have neither)."""
    depth = getattr(args, "baseline_ode_depth", None)
    return getattr(args, "ode_depth", 1) if depth is None else depth


def latent_config(name: str, ode_depth: int = 1) -> LatentODEConfig:
    """The configuration of the Latent ODE ``name`` with Rubanova's toy sizes (latent 10, 100
    units, rec. 20); ``+ time``: the GRU encoder is also fed each observation's time since t0
    (``encoder_time``); ``ode_depth``: hidden layers of the ODE-RNN encoder's vector field
    (Rubanova's ``create_net`` with ``--rec-layers 1`` has 2; the reports' runs had 1).

    The ODE-RNN encoder follows Rubanova's ``Encoder_z0_ODE_RNN``: a 100-unit vector field
    and a 100-unit tanh MLP from the final state to q(z0) (``transform_z0``); its GRU state is
    40 wide, standing in for Rubanova's 20 means plus 20 stds (our GRU carries no separate
    std). With a 20-unit field, a linear head and a 20-wide state it trailed the ODE-RNN
    further (``reports/periodic_encoder.md``). The GRU encoder maps its final state to q(z0)
    through a 50-unit tanh MLP, as Rubanova's ``Encoder_z0_RNN`` (``hiddens_to_z0``)."""
    odernn = "ODE-RNN" in name
    return LatentODEConfig(
        input_dim=1,
        latent_dim=10,
        encoder="odernn" if odernn else "gru",
        encoder_hidden=40 if odernn else 20,
        encoder_ode_hidden=100 if odernn else None,
        encoder_ode_depth=ode_depth if odernn and ode_depth != 1 else None,
        encoder_head_hidden=100 if odernn else 50,
        encoder_time="+ time" in name,
        anchor="last" if ANCHORED in name else "first",
        dynamics_hidden=100,
        decoder_hidden=100,
        obs_std=0.01,
        solver=SolverSettings("dopri5", rtol=1e-3, atol=1e-4),
    )


def build(name: str, ode_depth: int = 1) -> nn.Module:
    """The model ``name``: a Latent ODE (`latent_config`), the ODE-RNN (20 hidden, vector
    field 100 hidden, ``ode_depth`` hidden layers) or the GRU baseline (20 hidden)."""
    if name.startswith("Latent ODE"):
        return LatentODE(latent_config(name, ode_depth))
    if name == "ODE-RNN":
        return ODERNN(
            1, hidden=20, ode_hidden=100, ode_depth=ode_depth, decoder_hidden=100, obs_std=0.01
        )
    return GRUBaseline(1, hidden=20, decoder_hidden=100, obs_std=0.01)


def loss_fn(model: nn.Module, anneal: int, both: bool = False) -> Callable[[Split, int], Tensor]:
    """Training loss: negative ELBO (KL annealed) or Gaussian NLL, per observed value. With
    ``both`` (extrapolation) the ELBO scores the conditioning points and the second half; by
    default only the second half (Rubanova's extrapolation objective), which leaves the
    decoded first half untrained."""

    def loss(split: Split, it: int) -> Tensor:
        if isinstance(model, LatentODE):
            kl_weight = min(1.0, it / anneal)
            target = split.target
            if both:
                whole = torch.cat([split.observed.values, split.target.values], dim=1)
                mask = torch.cat([split.observed.mask, split.target.mask], dim=1)
                times = torch.cat([split.observed.times, split.target.times])
                target = IrregularBatch(times=times, values=whole, mask=mask)
            return model.loss(split.observed, target, n_samples=3, kl_weight=kl_weight)
        return model.loss(split.observed, split.target)

    return loss


def train(
    label: str,
    model: nn.Module,
    train_set: IrregularBatch,
    task: str,
    args: argparse.Namespace,
    both: bool = False,
    prepare: Callable[[Split], Split] | None = None,
) -> float:
    """Adamax lr 0.01 decaying 0.999 per step (Rubanova); ``both``: see `loss_fn`;
    ``prepare`` maps every training split before the loss (e.g. `align_last`). Returns the
    wall time (s)."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adamax(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.999)
    step = loss_fn(model, max(1, args.iters // 4), both=both)
    start = time.perf_counter()
    for it in range(args.iters):
        idx = torch.randperm(train_set.batch_size, generator=gen)[: args.batch_size]
        frac = FRACTIONS[int(torch.randint(len(FRACTIONS), (1,), generator=gen))]
        split = make_split(train_set[idx], task, frac, gen)
        loss = step(prepare(split) if prepare else split, it)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if it % max(1, args.iters // 5) == 0 or it == args.iters - 1:
            wall = time.perf_counter() - start
            msg = f"[{label}] iter {it:4d} loss {float(loss.detach()):10.3f} {wall:6.1f}s"
            print(msg, flush=True)
    return time.perf_counter() - start


Predictor = Callable[[Split], tuple[Tensor, Tensor]]


def predictor(
    model: nn.Module, importance: bool = False, prior: AggregatePosterior | None = None, k: int = 0
) -> Predictor:
    """Predictive mean and std ``[B, T, 1]`` at a split's target times. Latent ODEs: 20
    posterior paths; with ``importance`` `IW_SAMPLES` paths weighted by the model's posterior;
    with ``prior`` ``k`` paths from it, weighted by the likelihood (50 series at a time)."""

    @torch.no_grad()
    def predict(split: Split) -> tuple[Tensor, Tensor]:
        times = split.target.times
        if prior is not None:
            assert isinstance(model, LatentODE)
            obs = split.observed
            parts = [
                model.predict(obs[lo : lo + 50], times, k, importance=True, prior=prior)
                for lo in range(0, obs.batch_size, 50)
            ]
            return torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts])
        if isinstance(model, LatentODE):
            n_samples = IW_SAMPLES if importance else 20
            pred = model.predict(split.observed, times, n_samples, importance)
        else:
            pred = model.predict(split.observed, times)
        return pred.mean, pred.std

    return predict


def analog(train_set: IrregularBatch, std: float = 0.01) -> Predictor:
    """The analog control: the training series' own values at the target times, weighted by
    the Gaussian likelihood (``std``) of each test series' conditioning points under them.
    Uses that all series share one grid (`make_periodic`)."""

    @torch.no_grad()
    def predict(split: Split) -> tuple[Tensor, Tensor]:
        grid = train_set.times
        seen = torch.searchsorted(grid, split.observed.times)  # (T_obs,)
        query = torch.searchsorted(grid, split.target.times)  # (T,)
        refs = train_set.values[..., 0]  # (N, T_all)
        obs, mask = split.observed.values[..., 0], split.observed.mask[..., 0]  # (B, T_obs)
        sq = (obs[:, None, :] - refs[None, :, seen]).square() * mask[:, None, :]  # (B, N, T_obs)
        w = torch.softmax(-0.5 * sq.sum(dim=-1) / std**2, dim=-1)  # (B, N)
        paths = refs[:, query]  # (N, T)
        mean = w @ paths  # (B, T)
        var = w @ paths.square() - mean.square() + std**2
        return mean[..., None], var.clamp_min(0.0).sqrt()[..., None]

    return predict


def evaluate(
    predict: Predictor,
    test: IrregularBatch,
    task: str,
    seed: int,
    prepare: Callable[[Split], Split] | None = None,
) -> dict:
    """Held-out and all-points test MSE at each fraction (`ForecastMetrics`); ``prepare``
    maps each split before it is predicted and scored (the same points, e.g. `align_last`)."""
    out = {}
    for frac in FRACTIONS:
        split = make_split(test, task, frac, torch.Generator().manual_seed(seed + int(100 * frac)))
        split = prepare(split) if prepare else split
        mean, std = predict(split)
        metrics = ForecastMetrics("test")
        metrics.update(mean, std, split.target.values, split.target.mask, split.heldout_mask)
        res = metrics.compute()
        out[frac] = (res["test/mse"], res["test/mse_all"])
    return out


def figure(model: LatentODE, test: IrregularBatch, task: str, path: Path, seed: int) -> None:
    """Posterior sample paths over the conditioning and prediction windows (30% observed)."""
    sel = test[[0, 1, 2]]
    split = make_split(sel, task, 0.3, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        samples = model.predict(split.observed, sel.times, n_samples=10).samples  # (K, 3, T, 1)
    n_cond = split.observed.n_times
    mask = torch.zeros_like(sel.values[..., 0])  # (3, T)
    mask[:, :n_cond] = split.observed.mask[..., 0]
    t_split = float(sel.times[n_cond]) if task == "extrapolation" else None
    titles = [f"{task}, test series {i}" for i in range(3)]
    fig = plot_posterior_samples(
        sel.times, sel.values[..., 0], mask, samples[..., 0], t_split, titles
    )
    fig.savefig(path, dpi=110)


def fmt(x: float) -> str:
    """An MSE in units of 1e-2 (the paper's style)."""
    return f"{100 * x:.3f}"


def cell(values: list[float]) -> str:
    """One seed's MSE (`fmt`), or over several seeds their mean and (min-max)."""
    if len(values) == 1:
        return fmt(values[0])
    mean = sum(values) / len(values)
    return f"{fmt(mean)} ({fmt(min(values))}-{fmt(max(values))})"


def report(args: argparse.Namespace, res: dict, walls: dict, total: float, out: Path) -> str:
    """The markdown report."""
    cmd = ".venv/bin/python experiments/periodic.py" + (
        " --quick" if args.quick else f" --iters {args.iters}"
    )
    if list(args.models) != list(MODELS):
        cmd += " --models " + " ".join(f"'{m}'" for m in args.models)
    if list(args.tasks) != list(TASKS):
        cmd += " --tasks " + " ".join(args.tasks)
    if args.aggregate_prior:
        cmd += f" --aggregate-prior {args.aggregate_prior}"
    if args.ode_depth != 1:
        cmd += f" --ode-depth {args.ode_depth}"
    if args.baseline_ode_depth is not None:
        cmd += f" --baseline-ode-depth {args.baseline_ode_depth}"
    if args.seeds != [0]:  # the default; `--seeds S` alone is `--seed S`
        cmd += " --seeds " + " ".join(map(str, args.seeds))
    seeds = ("seeds " if len(args.seeds) > 1 else "seed ") + ", ".join(map(str, args.seeds))
    head = "| model | " + " | ".join(f"{int(100 * f)}%" for f in FRACTIONS) + " |"
    rule = "|---|" + "---|" * len(FRACTIONS)
    lines = [
        "# Periodic: Rubanova et al. (2019) toy table",
        "",
        f"Command: `{cmd} --output {args.output}` ({seeds}; total wall time "
        f"{total / 60:.1f} min on a shared 2-core CPU, `torch.set_num_threads(1)`; trained "
        f"models cached in {args.workdir} are reused, their training time is listed below).",
        "",
        "## Setup",
        "",
        "- Data: `make_periodic` as Rubanova's code: one shared grid (0 and 99 sorted U(0, 5) "
        "draws), y = sin(2 pi f t) + c, f ~ U(0.4, 0.8), c ~ N(1, 0.1^2), noise 0.01 * U(0, 1); "
        f"1000 series (data seed 0), first {args.n_train} train, last {args.n_test} test.",
        f"- Training: one run per (model, task), {args.iters} iterations of batches of "
        f"{args.batch_size}, the observed fraction drawn per batch from 10/20/30/50%; Adamax lr "
        "0.01 decaying 0.999 per step, gradient clip 10. Rubanova trained one model per setting "
        "for far longer (their README's periodic command, `--niters 500`: 500 epochs of 16 "
        "batches, 8000 iterations).",
        "- Latent ODEs: latent 10, dynamics MLP 100 hidden x 2 (tanh), decoder 100 hidden, "
        f"encoder: ODE-RNN (GRU state 40, vector field 100 hidden x {args.ode_depth}, one "
        "Euler step per gap, "
        "posterior head an MLP of 100 tanh units, as Rubanova's `Encoder_z0_ODE_RNN` with its "
        "20 means + 20 stds) or GRU (20 hidden, posterior head an MLP of 50 tanh units, as "
        "Rubanova's `Encoder_z0_RNN`) with time gaps (`+ time`: and "
        "each observation's time since t0, `encoder_time`), fixed obs. std "
        f"0.01, ELBO with 3 samples, KL weight annealed 0 -> 1 over {max(1, args.iters // 4)} "
        "iterations, dopri5 rtol 1e-3 atol 1e-4; prediction = mean of 20 posterior paths. "
        "In extrapolation the ELBO scores the second half only (Rubanova's objective), except "
        f"for *{BOTH_HALVES}*, whose ELBO also scores the conditioning points (extrapolation "
        "only; in interpolation it would be the first model). "
        f"Rows marked *{ANCHORED.lstrip(', ')}*: the latent state the encoder infers sits at "
        "the last conditioning time instead of t0 (`anchor: last`): the ODE-RNN encoder runs "
        "forwards in time, and the ODE is integrated forwards from there to later times and "
        "backwards to earlier ones. "
        f"Rows marked *{IW.lstrip(', ')}*: the same trained model, predicting with "
        f"{IW_SAMPLES} paths drawn from the encoder's q(z0) and weighted by p(observed | z0) "
        "p(z0) / q(z0) (`LatentODE.predict(importance=True)`): the model's own posterior, "
        "not the encoder's approximation of it."
        + (
            f" Rows marked *{AGG.lstrip(', ')}*: the same trained model under another prior, "
            "the aggregate posterior (the mixture of its encoder's q(z0) over the "
            f"{args.n_train} training series, fully observed as the task conditions them, "
            f"`LatentODE.aggregate_posterior`): {args.aggregate_prior} paths drawn from it, "
            "weighted by p(observed | z0) (`LatentODE.predict(importance=True, prior=...)`); "
            f"the encoder is not used at prediction. *{ANALOG}*: the {args.n_train} training "
            "series' own values, weighted by the Gaussian likelihood (std 0.01) of the test "
            "series' conditioning points under them: what memory of the training set alone "
            "gives."
            if args.aggregate_prior
            else ""
        ),
        f"- ODE-RNN (20 hidden, vector field 100 hidden x {baseline_depth(args)}) and GRU (20 "
        "hidden, "
        "fed time gaps) run "
        "forwards: a prediction at t uses only observations before t; past the last observation "
        "the ODE-RNN follows its ODE, the GRU rolls out autoregressively. Gaussian NLL with std "
        "0.01 (= MSE).",
        "- Scores (`ForecastMetrics`): MSE of the predictive mean on the "
        f"{args.n_test} test series, shown x 1e-2. **Held-out**: only the points the model did "
        "not condition on. **All points**: "
        "conditioning points included (what Rubanova's code reports for interpolation). In "
        "extrapolation the target is the second half, none of it observed, so the two coincide.",
        "",
        "Training wall time (s"
        + (", mean over the seeds" if len(args.seeds) > 1 else "")
        + "): "
        + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in walls.items())
        + ".",
        "",
    ]
    for task in args.tasks:
        kinds = (("held-out", 0), ("all points", 1)) if task == "interpolation" else (("", 0),)
        for kind, j in kinds:
            title = f"## {task.capitalize()} MSE x 1e-2" + (f", {kind}" if kind else "")
            lines += [title, "", head, rule]
            rows = [n for m in args.models for n in (m, m + IW, m + AGG) if task in res.get(n, {})]
            for name in rows + ([ANALOG] if ANALOG in res else []):
                row = " | ".join(
                    cell([score[f][j] for score in res[name][task]]) for f in FRACTIONS
                )
                lines.append(f"| {name} | {row} |")
            lines.append("")
    lines += [
        "## Paper numbers",
        "",
        "ANCHORS does not list the toy table, and the search for it in the stored pages and code "
        "did not find its numbers; they are not copied here from memory. The issue's target "
        "(Latent ODE with ODE-RNN encoder at or below every number of the paper's toy table) "
        "therefore cannot be checked in this report.",
        "",
    ]
    if MODELS[0] not in args.models:  # the figures show that model's posterior samples
        return "\n".join(lines)
    lines += [
        "## Figures",
        "",
        *(f"![{task}]({out.stem}_{task[:6]}.png)\n" for task in args.tasks),
        "Latent ODE (ODE-RNN encoder): 10 posterior sample paths (blue) for three test series "
        "conditioned on 30% of the points (black); grey the data. Extrapolation: conditioned on "
        "the first half (left of the dotted line), predicting the second.",
        "",
    ]
    return "\n".join(lines)


def training_windows(train_set: IrregularBatch, task: str) -> IrregularBatch:
    """The training series fully observed as the task conditions them (all points for
    interpolation, the first half for extrapolation): what `LatentODE.aggregate_posterior`
    encodes."""
    return train_set if task == "interpolation" else split_extrapolation(train_set).observed


# Config fields added after runs were cached, and their defaults: left out of the hash at
# those defaults, so that the cached runs keep their names.
LATER_FIELDS = {"anchor": "first", "encoder_ode_depth": None}


def config_hash(config: LatentODEConfig) -> str:
    """Eight hex digits of the configuration (`LATER_FIELDS` at their defaults left out)."""
    text = repr(config)
    for key, default in LATER_FIELDS.items():
        text = text.replace(f", {key}={default!r}", "")
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def trained(
    name: str,
    task: str,
    args: argparse.Namespace,
    train_set: IrregularBatch,
    make: Callable[[str], nn.Module] = build,
    aligned: bool = False,
) -> tuple[nn.Module, float]:
    """The model ``make(name)`` trained on ``task`` (`train`; on both halves when ``name``
    ends with `BOTH`; with ``aligned`` on batches aligned series by series, `align_last`),
    loaded from ``args.workdir`` when a run with the same settings was cached there. Returns
    it in eval mode and the training wall time (s) of the run that trained it."""
    slug = name.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")
    slug = slug.replace("+", "plus").replace("-", "").replace(",", "")
    slug = re.sub(r"[^a-z0-9_]", "", slug)
    torch.manual_seed(args.seed)
    depth = baseline_depth(args) if name == "ODE-RNN" else getattr(args, "ode_depth", 1)
    model = make(name) if depth == 1 else make(name, depth)
    if isinstance(model, LatentODE):  # a changed configuration is a new cache entry
        slug += "_" + config_hash(model.config)
    elif isinstance(model, ODERNN) and depth != 1:
        slug += f"_depth{depth}"
    slug += "_aligned" if aligned else ""
    path = args.workdir / f"{slug}_{task}_it{args.iters}_n{args.n_train}_s{args.seed}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state"])
        print(f"[{name}, {task}] loaded {path}", flush=True)
        return model.eval(), float(saved["wall"])
    prepare = align_last if aligned else None
    label, both = f"{name}, {task}{', aligned' if aligned else ''}", name.endswith(BOTH)
    wall = train(label, model, train_set, task, args, both=both, prepare=prepare)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "wall": wall}, path)
    return model.eval(), wall


def run_one(
    name: str,
    task: str,
    args: argparse.Namespace,
    train_set: IrregularBatch,
    test_set: IrregularBatch,
    out: Path | None,
) -> tuple[str, str, float, dict]:
    """Train (or load) and score one (model, task) in its own process (one torch thread); the
    figure of the first model (under ``out``'s name; none when ``out`` is None). Returns
    ``(name, task, training wall time, scores by row name)``: the Latent ODEs are also
    scored importance-weighted (the row ``name + IW``) and, with ``--aggregate-prior``,
    under the aggregate-posterior prior (``name + AGG``). The global RNG is seeded before
    each scoring, so cached and fresh models score alike."""
    torch.set_num_threads(1)
    model, wall = trained(name, task, args, train_set)
    seed = args.seed + 1000
    torch.manual_seed(seed)
    scores = {name: evaluate(predictor(model), test_set, task, seed)}
    if out is not None and name == MODELS[0] and isinstance(model, LatentODE):
        stem = "interp" if task == "interpolation" else "extrap"
        figure(model, test_set, task, out.parent / f"{out.stem}_{stem}.png", args.seed)
    if isinstance(model, LatentODE):
        torch.manual_seed(seed)
        scores[name + IW] = evaluate(predictor(model, importance=True), test_set, task, seed)
        if args.aggregate_prior:
            prior = model.aggregate_posterior(training_windows(train_set, task))
            torch.manual_seed(seed)
            agg = predictor(model, prior=prior, k=args.aggregate_prior)
            scores[name + AGG] = evaluate(agg, test_set, task, seed)
    print(f"{name}, {task}", scores, flush=True)
    return name, task, wall, scores


def main() -> None:
    """Train the eight models (the "both halves" ones on extrapolation only), score them,
    write the report and figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="reports/periodic.md")
    parser.add_argument("--quick", action="store_true", help="~1-minute smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train and score every run for each of these seeds; the tables give the mean and "
        "(min-max) over them, the figures the first seed (default: --seed alone)",
    )
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--jobs", type=int, default=2, help="(model, task) runs in parallel")
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic"))
    parser.add_argument(
        "--ode-depth",
        type=int,
        default=1,
        help="hidden layers of the ODE-RNN vector fields (the Latent ODE's ODE-RNN encoder's "
        "and the ODE-RNN baseline's): 1 (default, the reports' runs); Rubanova's is 2",
    )
    parser.add_argument(
        "--baseline-ode-depth",
        type=int,
        default=None,
        help="the ODE-RNN baseline's field depth alone (default: --ode-depth); e.g. 2, "
        "Rubanova's, with the latent ODEs' encoders at 1 (reports/periodic_depth.md)",
    )
    parser.add_argument(
        "--aggregate-prior",
        type=int,
        default=0,
        metavar="K",
        help="also score each Latent ODE under its aggregate-posterior prior with K weighted "
        "paths, and the analog control; 0 (default): not",
    )
    args = parser.parse_args()
    args.seeds = args.seeds or [args.seed]
    args.n_train, args.n_test = 800, 200
    if args.quick:
        args.iters, args.n_train, args.n_test = 8, 100, 40
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    data = make_periodic(n=1000, seed=0).batch
    train_set = data[list(range(args.n_train))]
    test_set = data[list(range(800, 800 + args.n_test))]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {}  # row -> task -> [scores of each seed, in args.seeds' order]
    walls: dict[str, list[float]] = {}
    runs = [
        (
            name,
            task,
            argparse.Namespace(**{**vars(args), "seed": seed}),
            train_set,
            test_set,
            out if seed == args.seeds[0] else None,
        )
        for seed in args.seeds
        for task in args.tasks
        for name in args.models
        if not (name.endswith(BOTH) and task == "interpolation")  # as without BOTH there
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, task, wall, scores in pool.map(run_one, *zip(*runs, strict=True)):
            walls.setdefault(f"{name}, {task}", []).append(wall)
            for row, score in scores.items():
                res.setdefault(row, {}).setdefault(task, []).append(score)
    if args.aggregate_prior:
        for task in args.tasks:
            res.setdefault(ANALOG, {})[task] = [
                evaluate(analog(train_set), test_set, task, seed + 1000) for seed in args.seeds
            ]
    total = time.perf_counter() - t_start
    out.write_text(report(args, res, walls, total, out) + notes(out))
    print(out.read_text())


if __name__ == "__main__":
    main()
