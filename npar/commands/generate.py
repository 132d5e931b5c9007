"""``npar generate CKPT``: sample audio from a trained WaveNet."""

import logging
import time

import numpy as np

from npar.commands import check_positive
from npar.data.audio import mu_law_decode, mu_law_encode, read_wav, write_wav
from npar.models.io import header_of, read_npz
from npar.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SILENCE = 128


def add_parser(subparsers):
    p = subparsers.add_parser(
        "generate", help="generate audio with a trained WaveNet",
        description="Sample mu-law codes from a WaveNet checkpoint and write "
        "them as a 16-bit WAV file. Without --prompt the model starts from "
        "silence (code 128 over its receptive field).")
    p.add_argument("checkpoint", help="checkpoint.npz of 'npar train wavenet'")
    p.add_argument("--seconds", type=float, required=True,
                   help="length of the generated audio")
    p.add_argument("--out", required=True, help="the .wav file to write")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest codes")
    p.add_argument("--top-p", type=float, help="nucleus sampling with mass p")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--engine", choices=["cached", "naive"], default="cached",
                   help="cached queues (fast, default) or the full forward pass "
                   "per sample (slow reference)")
    p.add_argument("--prompt", help="WAV file whose end the generation continues")
    p.add_argument("--include-prompt", action="store_true",
                   help="write the prompt before the generated audio")
    p.add_argument("--sample-rate", type=int,
                   help="Hz (default: the rate the checkpoint was trained at, "
                   "else 16000)")
    return p


def _trained_rate(path):
    # The sample rate a training checkpoint recorded, if any.
    import json

    arrays = read_npz(path)
    header_of(arrays, path)
    if "__train__" not in arrays:
        return None
    options = json.loads(str(arrays["__train__"])).get("options") or {}
    return options.get("sample_rate")


def run(args):
    from npar.sampling.wavenet import generate

    check_positive(vars(args), ("seconds",), integer=False)
    check_positive(vars(args), ("sample_rate",))
    check_positive(vars(args), ("seed",), allow_zero=True)
    model, _ = load_checkpoint(args.checkpoint, kind="wavenet")
    rate = args.sample_rate or _trained_rate(args.checkpoint) or 16000
    field = model.receptive_field()
    if args.prompt:
        samples, _ = read_wav(args.prompt, rate)
        prompt = mu_law_encode(samples, model.levels).astype(np.int64)
    else:
        prompt = np.full(field - 1, SILENCE, dtype=np.int64)
    n_samples = int(round(args.seconds * rate))

    start = time.perf_counter()
    codes = generate(model, n_samples, np.random.default_rng(args.seed),
                     engine=args.engine, temperature=args.temperature,
                     seed=prompt, top_k=args.top_k, top_p=args.top_p)
    seconds = time.perf_counter() - start
    if args.include_prompt and args.prompt:
        codes = np.concatenate([prompt, codes])
    write_wav(args.out, mu_law_decode(codes, model.levels), rate)
    print(f"wrote {args.out}: {len(codes) / rate:.2f} s at {rate} Hz; "
          f"{n_samples / max(seconds, 1e-9):.0f} samples/s ({args.engine} engine)")
    return 0
