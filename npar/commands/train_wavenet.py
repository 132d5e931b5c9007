"""``npar train wavenet``: a WaveNet on speech.

Reads WAV files (default: the speech shipped in ``npar/data/audio``),
resamples them to ``--sample-rate`` and mu-law encodes them. The last
``--test-fraction`` of the files (evenly spaced in sorted order; the end
of the file when there is only one) is held out: training crops never
touch it, not even as context.

Writes into ``--out``: ``checkpoint.npz`` (model, optimizer, progress),
``metrics.json``, ``generated.wav`` (audio sampled from the trained model,
seeded with held-out speech) and, when matplotlib is installed,
``spectrogram.png`` (the real continuation of that seed next to the
generated one).

Bits per sample on the held-out audio is compared with two baselines
measured on the same samples: the entropy of the code histogram (what a
model that ignores the past could reach at best) and the entropy of the
histogram of first differences ``q[t] - q[t-1]`` (a model that predicts
"like the previous sample, plus typical noise").
"""

import logging
import math
import os
import time

import numpy as np

from npar.backend import add_device_argument, make_trainer
from npar.commands import (
    check_positive,
    check_resume_options,
    write_json_atomic,
)
from npar.data.audio import load_codes, mu_law_decode, write_wav
from npar.models.wavenet import WaveNet
from npar.train.checkpoint import load_checkpoint
from npar.train.loop import fit
from npar.train.optim import make_optimizer

log = logging.getLogger(__name__)

DEFAULTS = dict(sample_rate=16000, channels=None, skip_channels=None,
                head_channels=None, layers=None, stacks=None, batch_size=4,
                crop=2048, lr=2e-3, optimizer="adam", clip=1.0,
                schedule="cosine", time_budget=1800.0, test_fraction=0.1)


def add_parser(families):
    p = families.add_parser(
        "wavenet", help="train a WaveNet on speech (WAV files)",
        description="Train a WaveNet on mu-law coded speech; write "
        "checkpoint.npz, metrics.json, generated.wav and spectrogram.png "
        "into --out.")
    p.add_argument("--audio", nargs="+", metavar="PATH",
                   help="WAV files or folders (default: the shipped speech)")
    p.add_argument("--sample-rate", type=int, help="Hz (default 16000)")
    p.add_argument("--channels", type=int, help="residual channels (default 32)")
    p.add_argument("--skip-channels", type=int, help="skip channels (default 64)")
    p.add_argument("--head-channels", type=int,
                   help="channels of the output head (default 128)")
    p.add_argument("--layers", type=int,
                   help="blocks per stack, dilations 1..2^(layers-1) (default 10)")
    p.add_argument("--stacks", type=int, help="stacks of blocks (default 1)")
    p.add_argument("--batch-size", type=int, help="crops per step (default 4)")
    p.add_argument("--crop", type=int,
                   help="scored samples per crop, after the receptive field's "
                   "context (default 2048)")
    p.add_argument("--lr", type=float, help="learning rate (default 2e-3)")
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--clip", type=float, help="global gradient-norm clip, 0 = off")
    p.add_argument("--schedule", choices=["cosine", "constant"],
                   help="learning-rate schedule over the run (default cosine)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--max-steps", type=int, help="optimizer steps in all")
    stop.add_argument("--time-budget", type=float,
                      help="seconds of training in all (default 1800)")
    p.add_argument("--test-fraction", type=float,
                   help="fraction of the files held out (default 0.1)")
    p.add_argument("--seed", type=int, help="seed of init and crops (default 0)")
    p.add_argument("--out", default="runs/wavenet", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped")
    p.add_argument("--generate-seconds", type=float, default=2.0,
                   help="seconds of audio to generate into generated.wav (0: none)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of generated.wav")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_argument(p)
    return p


def _resolve_options(args):
    options = dict(DEFAULTS)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    options["audio"] = list(args.audio) if args.audio else None
    options["max_steps"] = args.max_steps
    if args.max_steps is not None:
        options["time_budget"] = None
    return options


def _build_model(options, seed):
    config = WaveNet.default_config()
    for key in ("channels", "skip_channels", "head_channels", "layers", "stacks"):
        if options.get(key) is not None:
            config[key] = options[key]
    return WaveNet(config, seed=seed)


def split_codes(codes, test_fraction, field):
    """Hold out whole files, or the end of a single file.

    With several files, ``ceil(test_fraction * files)`` of them, evenly
    spaced in the sorted list, are held out entirely (the tails of speech
    recordings are mostly silence, so a tail of every file would make a
    poor test set). With one file, its last ``test_fraction`` (at least
    ``field`` samples) is held out.

    Returns:
        ``(train, test)``: lists of code arrays.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must lie in (0, 1), got {test_fraction!r}")
    if len(codes) >= 2:
        n_test = min(max(1, math.ceil(test_fraction * len(codes))), len(codes) - 1)
        held = {int((i + 0.5) * len(codes) / n_test) for i in range(n_test)}
        train = [q for i, q in enumerate(codes) if i not in held]
        test = [q for i, q in enumerate(codes) if i in held]
        short = [len(q) for q in test if len(q) < field]
        if short:
            raise ValueError(
                f"held-out files of {short} samples are shorter than the "
                f"receptive field ({field}): use longer audio or a smaller model")
        return train, test
    q = codes[0]
    n_test = max(int(round(len(q) * test_fraction)), field)
    if n_test >= len(q):
        raise ValueError(
            f"a file of {len(q)} samples cannot give a held-out part of "
            f"{n_test} samples (receptive field {field}) and leave audio to "
            "train on; use longer audio or a smaller model")
    return [q[:len(q) - n_test]], [q[len(q) - n_test:]]


def make_batch_fn(train_codes, batch_size, length, seed):
    """``batch_fn(step)``: ``batch_size`` random crops of ``length`` codes,
    a pure function of ``(seed, step)``. Files are picked in proportion to
    the number of crops they hold; files shorter than a crop are skipped."""
    usable = [q for q in train_codes if len(q) >= length]
    if not usable:
        longest = max(len(q) for q in train_codes)
        raise ValueError(
            f"no training audio is as long as one crop ({length} samples = "
            f"receptive field context + --crop); the longest training part "
            f"has {longest} samples: lower --crop or use longer audio")
    if len(usable) < len(train_codes):
        log.warning("%d of %d files are shorter than a crop and are skipped",
                    len(train_codes) - len(usable), len(train_codes))
    starts = np.array([len(q) - length + 1 for q in usable], dtype=np.float64)
    weights = starts / starts.sum()

    def batch_fn(step):
        rng = np.random.default_rng([seed, step])
        files = rng.choice(len(usable), size=batch_size, p=weights)
        batch = np.empty((batch_size, length), dtype=np.int64)
        for row, index in enumerate(files):
            begin = rng.integers(0, len(usable[index]) - length + 1)
            batch[row] = usable[index][begin:begin + length]
        return (batch,)

    return batch_fn


def entropy_bits(values):
    """Entropy (bits) of the empirical distribution of integer ``values``."""
    _, counts = np.unique(np.asarray(values), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def evaluate(model, test_codes, chunk=8192):
    """Held-out bits per sample and the two baselines, on the same samples.

    Each held-out part is scored from position ``R - 1`` on (its first
    ``R - 1`` samples are context only), in chunks that overlap by
    ``R - 1`` so that every scored sample sees a full receptive field.
    """
    field = model.receptive_field()
    total, count = 0.0, 0
    scored = []
    for q in test_codes:
        for begin in range(0, len(q) - field + 1, chunk):
            piece = q[begin:begin + chunk + field - 1]
            nll, n = model.nll_sum(piece[None, :].astype(np.int64), field - 1)
            total += nll
            count += n
        scored.append(q.astype(np.int64))
    if count == 0:
        raise ValueError("the held-out audio has no sample past the receptive field")
    targets = np.concatenate([q[field - 1:] for q in scored])
    diffs = np.concatenate([q[field - 1:] - q[field - 2:-1] for q in scored])
    return {
        "test_bits_per_sample": total / (count * math.log(2)),
        "test_samples": count,
        "baseline_code_entropy_bits": entropy_bits(targets),
        "baseline_diff_entropy_bits": entropy_bits(diffs),
    }


def run(args):
    wall_start = time.perf_counter()
    out = args.out
    checkpoint_path = os.path.join(out, "checkpoint.npz")
    given = vars(args)
    check_positive(given, ("sample_rate", "channels", "skip_channels",
                           "head_channels", "layers", "stacks", "batch_size",
                           "crop", "max_steps"))
    check_positive(given, ("seed",), allow_zero=True)
    check_positive(given, ("time_budget",), integer=False)
    check_positive(given, ("clip", "generate_seconds", "temperature"),
                   integer=False, allow_zero=True)
    os.makedirs(out, exist_ok=True)

    if args.resume:
        if not os.path.exists(checkpoint_path):
            raise FileNotFoundError(
                f"--resume: no checkpoint at {checkpoint_path}; run without "
                "--resume to start")
        _, state = load_checkpoint(checkpoint_path, kind="wavenet")
        options = state.get("options")
        if options is None:
            raise ValueError(f"{checkpoint_path} holds no training options")
        check_resume_options(
            args, {**options, "seed": state.get("seed")},
            [key for key in DEFAULTS if key != "time_budget"] + ["audio", "seed"],
            checkpoint_path)
        options = dict(options)
        if args.max_steps is not None:
            options.update(max_steps=args.max_steps, time_budget=None)
        elif args.time_budget is not None:
            options.update(max_steps=None, time_budget=args.time_budget)
        optimizer = make_optimizer(options["optimizer"], options["lr"])
        model, state = load_checkpoint(checkpoint_path, optimizer, kind="wavenet")
        seed = state["seed"]
        log.info("resuming %s at step %d", checkpoint_path, state["step"])
    else:
        options = _resolve_options(args)
        seed = 0 if args.seed is None else args.seed
        model = _build_model(options, seed)
        optimizer = make_optimizer(options["optimizer"], options["lr"])
        state = {"seed": seed, "options": options}

    field = model.receptive_field()
    length = field - 1 + options["crop"]
    codes, files = load_codes(options["audio"], options["sample_rate"])
    train_codes, test_codes = split_codes(codes, options["test_fraction"], field)
    batch_fn = make_batch_fn(train_codes, options["batch_size"], length, seed)
    log.info("wavenet with %d parameters, receptive field %d samples (%.1f ms), "
             "config %s", model.n_params(), field,
             1000.0 * field / options["sample_rate"], model.config)

    trainer = make_trainer(model, optimizer, device=args.device)
    state = fit(model, optimizer, batch_fn, max_steps=options["max_steps"],
                time_budget=options["time_budget"], trainer=trainer,
                clip_norm=options["clip"] or None, schedule=options["schedule"],
                warmup_fraction=0.02, checkpoint_path=checkpoint_path,
                state=state, progress=not args.no_progress,
                items_per_batch=options["batch_size"] * options["crop"],
                unit_name="bits/sample")

    metrics = {"model": model.kind, "config": model.config,
               "params": model.n_params(), "receptive_field": field,
               "receptive_field_ms": 1000.0 * field / options["sample_rate"],
               "steps": state["step"], "train_seconds": state["elapsed"],
               "scored_samples_per_s": state["step"] * options["batch_size"]
               * options["crop"] / max(state["elapsed"], 1e-9),
               "stopped": state["stopped"], "seed": seed, "options": options,
               "files": len(files),
               "train_samples": int(sum(len(q) for q in train_codes))}
    recent = state["losses"][-100:]
    metrics["train_bits_per_sample"] = (float(np.mean(recent)) / math.log(2)
                                        if recent else None)
    metrics["train_bits_note"] = "mean training loss over the last 100 steps"
    metrics.update(evaluate(model, test_codes))
    metrics["wall_s"] = time.perf_counter() - wall_start
    # Written before generation too, so that the figures survive a failure
    # or an interrupt while the audio is being sampled.
    _write_metrics(metrics, out)

    if args.generate_seconds > 0 and state["stopped"] != "interrupted":
        metrics.update(_write_audio(model, test_codes, options["sample_rate"],
                                    args.generate_seconds, args.temperature, seed,
                                    out))
        metrics["wall_s"] = time.perf_counter() - wall_start
        _write_metrics(metrics, out)
    print(f"test bits/sample {metrics['test_bits_per_sample']:.4f} on "
          f"{metrics['test_samples']} held-out samples (baselines: code "
          f"histogram {metrics['baseline_code_entropy_bits']:.4f}, first "
          f"differences {metrics['baseline_diff_entropy_bits']:.4f}); "
          f"{state['step']} steps; {metrics['wall_s']:.0f} s; wrote {out}")
    return 0


def _write_metrics(metrics, out):
    write_json_atomic(metrics, os.path.join(out, "metrics.json"))


def _write_audio(model, test_codes, sample_rate, seconds, temperature, seed, out):
    # Seed generation with the start of the longest held-out part; keep the
    # real continuation for the spectrogram.
    from npar.sampling.wavenet import CachedEngine

    field = model.receptive_field()
    n_samples = int(round(seconds * sample_rate))
    real = max(test_codes, key=len).astype(np.int64)
    prompt = real[:field - 1]
    start = time.perf_counter()
    generated = CachedEngine(model).generate(
        n_samples, np.random.default_rng(seed), temperature, prompt)
    seconds_taken = time.perf_counter() - start
    audio = mu_law_decode(np.concatenate([prompt, generated]), model.levels)
    path = os.path.join(out, "generated.wav")
    write_wav(path, audio, sample_rate)
    result = {"generated_wav": path, "generated_samples": n_samples,
              "generation_samples_per_s": n_samples / max(seconds_taken, 1e-9),
              "generated_seed_samples": len(prompt)}
    real_audio = mu_law_decode(real[:len(audio)], model.levels)
    picture = _spectrogram(real_audio, audio, sample_rate,
                           os.path.join(out, "spectrogram.png"))
    if picture:
        result["spectrogram_png"] = picture
    return result


def _spectrogram(real, generated, sample_rate, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no spectrogram.png")
        return None
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, signal, title in ((axes[0], real, "held-out speech"),
                              (axes[1], generated, "generated (same seed)")):
        nfft = int(min(512, max(16, len(signal) // 4)))
        with np.errstate(divide="ignore"):  # log10 of exact silence
            ax.specgram(signal, NFFT=nfft, Fs=sample_rate, noverlap=3 * nfft // 4,
                        cmap="magma")
        ax.set_title(title)
        ax.set_ylabel("Hz")
    axes[1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
