"""``minigpt bench``: one training step of minigpt against the same model in PyTorch, side by side.

A step is forward, backward, global-norm clipping to 1.0 and one AdamW update (the ``paper`` preset's
learning rate, betas and weight decay, on weight matrices only), on the ``paper`` preset's sequences.  The PyTorch model is built from its
own modules (``nn.Linear``, ``nn.LayerNorm``, ``F.scaled_dot_product_attention(is_causal=True)``, tanh
GELU, ``torch.optim.AdamW``), starts from minigpt's initial weights (so the first losses must agree) and
runs in float32 with the same thread count.

Each (configuration, thread count) runs in a fresh subprocess whose BLAS and OpenMP thread counts are
set in its environment before numpy or torch load (``torch.set_num_threads`` too).  minigpt's step uses
``threads="auto"``: on n threads it runs n batch shards, one here and n - 1 in helper processes with one
BLAS thread each (``minigpt.fast.shardpool``); their CPU time and memory are counted with minigpt's.  Inside it the two
steps alternate in blocks of ``BLOCK`` back-to-back steps (the order flips every round; the first step of a
block is not timed, see ``worker``), warm-up rounds are dropped and medians are reported.
Wall-clock time is what a user waits for; process CPU time is also shown because on a busy machine
the wall time includes waiting for a core.  ``torch`` is optional: without it only minigpt is timed.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc  # numpy reports its allocations to tracemalloc: the peak of one minigpt step

import numpy as np

from .fast.model import Transformer
from .fast.shardpool import get_pool, helper_pids
from .fast.threads import BLAS_ENV, blas_threads, default_threads
from .nn.optim import AdamW, clip_grad_norm
from .tasks import presets

CONFIGS = {
    "paper": {"desc": "paper preset: 3 layers, d_model 64, 4 heads, d_mlp 256", "model": {}},
    "attn": {"desc": "paper, attention-only", "model": {"attn_only": True}},
    "wide": {"desc": "3 layers, d_model 256, 8 heads, d_mlp 1024", "model": {"d_model": 256, "n_heads": 8, "d_mlp": 1024}},
}
BATCH = 256
WARMUP = 3
BLOCK = 3  # steps per framework per round, back to back; the first of each block is not timed (see ``worker``)


# ----------------------------------------------------------------------------- the two models
def build_minigpt(config: str, seed: int = 0):
    """(model, optimizer, task) for a named configuration."""
    spec = presets.get_preset("paper")
    spec["model"].update(CONFIGS[config]["model"])
    mcfg, tcfg, task = presets.build(spec)
    model = Transformer(mcfg, seed=seed)
    opt = AdamW(model.params, lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), weight_decay=tcfg.weight_decay)
    return model, opt, task


def minigpt_step(model, opt, x, y):
    loss, grads = model.loss_and_grad(x, y, threads="auto")
    clip_grad_norm(grads, 1.0)
    opt.step(grads)
    return loss


def build_torch(model, opt):
    """The same transformer from PyTorch modules, with minigpt's current weights copied in, and a
    ``torch.optim.AdamW`` with the hyperparameters of minigpt's optimizer ``opt``."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    cfg, P = model.cfg, model.params
    D, H, E, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    ln = cfg.normalization_type == "LN"
    act = {"gelu_new": lambda h: F.gelu(h, approximate="tanh"), "gelu": F.gelu, "relu": F.relu}[cfg.act_fn]

    def norm():
        return nn.LayerNorm(D, eps=cfg.eps) if ln else nn.Identity()

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.qkv, self.o = norm(), nn.Linear(D, 3 * H * E), nn.Linear(H * E, D)
            if not cfg.attn_only:
                self.ln2, self.fc, self.proj = norm(), nn.Linear(D, M), nn.Linear(M, D)

        def forward(self, x):  # x [B, T, D]
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, E).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, E]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, E]
            x = x + self.o(z.transpose(1, 2).reshape(B, T, H * E))
            if not cfg.attn_only:
                x = x + self.proj(act(self.fc(self.ln2(x))))
            return x

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(cfg.d_in, D, bias=False)
            self.pos = nn.Parameter(torch.zeros(cfg.n_ctx, D))
            self.blocks = nn.ModuleList([Block() for _ in range(cfg.n_layers)])
            self.ln_final, self.unembed = norm(), nn.Linear(D, cfg.d_out)

        def forward(self, x):  # x [B, T, d_in]
            h = self.embed(x) + self.pos[: x.shape[1]]
            for block in self.blocks:
                h = block(h)
            return self.unembed(self.ln_final(h))  # [B, T, d_out]

    net = GPT()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    with torch.no_grad():
        net.embed.weight.copy_(t(P["embed.W_E"].T))
        net.pos.copy_(t(P["pos_embed.W_pos"]))
        for l, blk in enumerate(net.blocks):
            p = f"blocks.{l}."
            W_qkv = np.stack([P[p + f"attn.W_{n}"] for n in "QKV"]).transpose(2, 0, 1, 3).reshape(D, 3 * H * E)
            blk.qkv.weight.copy_(t(W_qkv.T))
            blk.qkv.bias.copy_(t(np.stack([P[p + f"attn.b_{n}"] for n in "QKV"]).reshape(-1)))
            blk.o.weight.copy_(t(P[p + "attn.W_O"].reshape(H * E, D).T))
            blk.o.bias.copy_(t(P[p + "attn.b_O"]))
            pairs = [("ln1", "ln1")] + ([] if cfg.attn_only else [("ln2", "ln2")])
            for mod, name in pairs if ln else []:
                getattr(blk, mod).weight.copy_(t(P[p + name + ".w"]))
                getattr(blk, mod).bias.copy_(t(P[p + name + ".b"]))
            if not cfg.attn_only:
                blk.fc.weight.copy_(t(P[p + "mlp.W_in"].T))
                blk.fc.bias.copy_(t(P[p + "mlp.b_in"]))
                blk.proj.weight.copy_(t(P[p + "mlp.W_out"].T))
                blk.proj.bias.copy_(t(P[p + "mlp.b_out"]))
        if ln:
            net.ln_final.weight.copy_(t(P["ln_final.w"]))
            net.ln_final.bias.copy_(t(P["ln_final.b"]))
        net.unembed.weight.copy_(t(P["unembed.W_U"].T))
        net.unembed.bias.copy_(t(P["unembed.b_U"]))
    # weight decay on weight matrices only, as minigpt (not on biases, LayerNorm, positional embedding)
    decay = [p for n, p in net.named_parameters() if p.ndim == 2 and n != "pos"]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim == 2 and n != "pos")]
    groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return net, torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)


def torch_step(net, opt, x, y):
    import torch
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(net(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.item()


# ----------------------------------------------------------------------------- measurements
def step_matmul_flops(cfg, B, T) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of the matrix products of one training step: the forward's,
    times 3 (the backward computes two products per forward product).  Attention counts the full T x T."""
    D, H, E, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    per_token = 2 * cfg.d_in * D + 2 * D * cfg.d_out
    per_layer = 2 * D * 3 * H * E + 2 * 2 * T * H * E + 2 * H * E * D  # qkv, scores + pattern @ v, W_O
    if not cfg.attn_only:
        per_layer += 2 * 2 * D * M
    return 3.0 * B * T * (per_token + cfg.n_layers * per_layer)


def matmul_peak_gflops(n=1024, repeats=5) -> float:
    """Best float32 ``[n, n] @ [n, n]`` rate of numpy's BLAS in this process, GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = min(_timed(lambda: np.matmul(a, a, out=out))[0] for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _helpers_cpu() -> float:
    """CPU seconds used so far by minigpt's shard helper processes (``minigpt.fast.shardpool``), from /proc."""
    total = 0.0
    for pid in helper_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def _timed(fn, helpers=False):
    """(wall seconds, CPU seconds of this process and, with ``helpers``, of the shard helpers, fn())."""
    cpu = (lambda: time.process_time() + _helpers_cpu()) if helpers else time.process_time
    w, c = time.perf_counter(), cpu()
    r = fn()
    return time.perf_counter() - w, cpu() - c, r


def _peak_rss_mb(pid="self", field="VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process, MB.  VmHWM, unlike ru_maxrss, does not
    inherit the parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if pid != "self":
        return 0.0

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(config: str, threads: int, steps: int, which: str = "both") -> dict:
    """Run in a subprocess with the thread variables set; returns the measurements."""
    model, opt, task = build_minigpt(config)
    batch = task.sample(BATCH, np.random.default_rng(1), dtype=np.float32)
    x, y = np.ascontiguousarray(batch.inputs), np.ascontiguousarray(batch.targets)
    B, T = x.shape
    res = {"config": config, "threads": threads, "batch": B, "positions": T, "tokens_per_step": B * T,
           "params": model.num_params(), "blas_threads": blas_threads()}
    if which == "mem-minigpt" or which == "mem-torch":  # peak-RSS growth over a few steps, one framework alone
        if which == "mem-torch":
            import torch

            torch.set_num_threads(threads)
            net, topt = build_torch(model, opt)
            xt, yt = torch.from_numpy(x[..., None]), torch.from_numpy(y[..., None])
            fn = lambda: torch_step(net, topt, xt, yt)  # noqa: E731
        else:

            n = default_threads()
            if n > 1:  # start the helpers first: their growth is counted from their start-up
                get_pool(model.cfg, n - 1)
            helpers = {pid: _peak_rss_mb(pid, "VmRSS") for pid in helper_pids()}
            fn = lambda: minigpt_step(model, opt, x, y)  # noqa: E731
        before = _peak_rss_mb()
        for _ in range(3):
            fn()
        res["peak_rss_growth_mb"] = _peak_rss_mb() - before
        if which == "mem-minigpt":
            res["peak_rss_growth_mb"] += sum(_peak_rss_mb(pid) - base for pid, base in helpers.items())
        return res
    try:
        import torch
    except ImportError:
        torch = None
    runners = {"minigpt": lambda: minigpt_step(model, opt, x, y)}
    if torch is not None:
        torch.set_num_threads(threads)
        net, topt = build_torch(model, opt)
        xt, yt = torch.from_numpy(x[..., None]), torch.from_numpy(y[..., None])
        runners["torch"] = lambda: torch_step(net, topt, xt, yt)
        res["torch_version"], res["torch_threads"] = torch.__version__, torch.get_num_threads()
    res["load_before"] = os.getloadavg()[0]
    wall = {k: [] for k in runners}
    cpu = {k: [] for k in runners}
    losses = {k: [] for k in runners}
    order = list(runners)
    # Rounds of BLOCK back-to-back steps per framework, the order flipping every round.  The first step of
    # each block is not timed: the other framework's idle thread pool still spins for a while after its
    # last task (OpenBLAS ~0.1 s, OpenMP less) and takes a core from it.  What is timed is steady
    # training, as a user's run of consecutive steps sees it.
    for i in range(WARMUP + steps):
        for name in order if i % 2 == 0 else order[::-1]:
            for j in range(BLOCK):
                w, c, loss = _timed(runners[name], helpers=name == "minigpt")
                losses[name].append(float(loss))
                if i >= WARMUP and j > 0:
                    wall[name].append(w)
                    cpu[name].append(c)
    res["load_after"] = os.getloadavg()[0]
    res["losses"] = losses  # the same data and starting weights: the trajectories must agree closely
    flops = step_matmul_flops(model.cfg, B, T)
    res["step_gflop"] = flops / 1e9
    res["matmul_peak_gflops"] = matmul_peak_gflops()
    for name in runners:
        mw, mc = float(np.median(wall[name])), float(np.median(cpu[name]))
        res[name] = {"wall_ms": 1e3 * mw, "cpu_ms": 1e3 * mc, "tokens_per_s": B * T / mw,
                     "wall_ms_all": [round(1e3 * v, 2) for v in wall[name]]}
    res["minigpt"]["gflops"] = flops / (res["minigpt"]["wall_ms"] / 1e3) / 1e9

    tracemalloc.start()
    minigpt_step(model, opt, x, y)
    res["minigpt"]["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return res


def run_worker_subprocess(config, threads, steps, which="both") -> dict:
    env = dict(os.environ)
    for var in BLAS_ENV:
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "minigpt.bench", "--worker", config, str(threads), str(steps), which]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {config} threads={threads} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def format_table(results) -> str:
    header = ["config", "thr", "minigpt tok/s", "torch tok/s", "ratio", "ratio(cpu)", "mg ms", "torch ms",
              "mg GFLOP/s", "peak GFLOP/s", "mg MB", "torch MB", "load"]
    rows = []
    for r in results:
        mg, th = r["minigpt"], r.get("torch")
        rows.append([
            r["config"], r["threads"], f"{mg['tokens_per_s']:,.0f}",
            f"{th['tokens_per_s']:,.0f}" if th else "-",
            f"{mg['tokens_per_s'] / th['tokens_per_s']:.2f}x" if th else "-",
            f"{th['cpu_ms'] / mg['cpu_ms']:.2f}x" if th else "-",
            f"{mg['wall_ms']:.1f}", f"{th['wall_ms']:.1f}" if th else "-",
            f"{mg['gflops']:.0f}", f"{r['matmul_peak_gflops']:.0f}",
            f"{r.get('mem_minigpt_mb', float('nan')):.0f}", f"{r.get('mem_torch_mb', float('nan')):.0f}",
            f"{r['load_before']:.1f}/{r['load_after']:.1f}",
        ])
    widths = [max(len(h), *(len(str(row[i])) for row in rows)) for i, h in enumerate(header)]
    fmt = lambda row: "  ".join(str(c).rjust(w) for c, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(header)] + [fmt(row) for row in rows])


NOTES = """\
ratio      = minigpt tokens/s / torch tokens/s (wall-clock medians, same process, interleaved; > 1 means minigpt is faster)
ratio(cpu) = the same with CPU time (minigpt: this process and its shard helpers; less sensitive to other work)
GFLOP/s    = minigpt's matmul FLOPs per step / its median step time; peak = best numpy float32 1024^3 matmul, same run
MB         = growth of peak RSS over 3 steps, each framework alone in its own process (minigpt: with its shard
             helper processes' growth from their start-up)
load       = 1-minute load average before/after the timed rounds (a busy machine slows both, unevenly)
same losses: both train the same batch from the same weights; float32 rounding differences stay at ~1e-7 for the
           first steps and can grow later when a high learning rate makes the loss oscillate (paper: lr 3e-3)"""


def main(args) -> int:
    configs = list(CONFIGS) if args.config in (None, "all") else [args.config]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"minigpt bench: unknown config {c!r}; known: {', '.join(CONFIGS)}, all")
    threads = [1, 2] if args.threads is None else [int(args.threads)]
    steps = int(args.steps or 20)
    results = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed (pip install torch==2.13.0): timing minigpt alone")
    print(f"one training step (forward, backward, clip, AdamW) at batch {BATCH}; {steps} rounds of {BLOCK} steps per framework "
          f"({BLOCK - 1} timed) after {WARMUP} warm-up rounds; "
          f"{os.cpu_count()} CPUs")
    for c in configs:
        print(f"  {c}: {CONFIGS[c]['desc']}")
    for c in configs:
        for n in threads:
            r = run_worker_subprocess(c, n, steps)
            r["mem_minigpt_mb"] = run_worker_subprocess(c, n, steps, "mem-minigpt")["peak_rss_growth_mb"]
            if have_torch:
                r["mem_torch_mb"] = run_worker_subprocess(c, n, steps, "mem-torch")["peak_rss_growth_mb"]
                a, b = np.array(r["losses"]["minigpt"]), np.array(r["losses"]["torch"])
                rel = np.abs(a - b) / np.abs(b)
                r["loss_rel_diff_first5"], r["loss_max_rel_diff"] = float(rel[:5].max()), float(rel.max())
            results.append(r)
            print(f"  done {c} threads={n}: minigpt {r['minigpt']['wall_ms']:.1f} ms"
                  + (f", torch {r['torch']['wall_ms']:.1f} ms, same losses: first 5 steps to {r['loss_rel_diff_first5']:.0e}, all {len(a)} to {r['loss_max_rel_diff']:.0e}"
                     if have_torch else ""), flush=True)
    print()
    print(format_table(results))
    print(NOTES)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        _, _, cfg_name, n_threads, n_steps, which = sys.argv
        print(json.dumps(worker(cfg_name, int(n_threads), int(n_steps), which)))
    else:
        raise SystemExit("use `minigpt bench` or `python benchmarks/bench_step.py`")
