"""The training loop, shared by every model.

The loop asks a batch function for the batch of step ``s`` (a pure function
of the seed and ``s``), so that a run resumed from a checkpoint at step
``s`` sees exactly the batches, and therefore the losses, of an
uninterrupted run. It stops after ``max_steps`` steps or ``time_budget``
seconds of training, whichever comes first, checkpoints atomically every
``checkpoint_every`` seconds and at the end, and refuses to go on (keeping
the last good checkpoint) when the loss or a gradient stops being finite.
"""

import logging
import math
import signal
import time

import numpy as np
from tqdm.auto import tqdm

from npar.train.checkpoint import save_checkpoint
from npar.train.optim import clip_by_global_norm

log = logging.getLogger(__name__)
BITS_PER_NAT = 1.0 / math.log(2.0)


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


def learning_rate(base_lr, schedule, fraction, warmup_fraction=0.0):
    """Learning rate at ``fraction`` (0..1) of the run.

    ``"constant"``: ``base_lr``. ``"cosine"``: ``base_lr (1 + cos(pi f)) / 2``
    after a linear warm-up over the first ``warmup_fraction`` of the run.
    """
    fraction = min(max(fraction, 0.0), 1.0)
    if warmup_fraction > 0 and fraction < warmup_fraction:
        return base_lr * (fraction / warmup_fraction)
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * fraction))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")


class _StopFlag:
    # Turns Ctrl-C into a request to stop after the current step, so that the
    # checkpoint written on the way out is never half-updated.
    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after this step (again to abort)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def fit(model, optimizer, batch_fn, *, max_steps=None, time_budget=None,
        clip_norm=None, schedule="constant", warmup_fraction=0.0,
        checkpoint_path=None, checkpoint_every=120.0, state=None,
        progress=True, items_per_batch=None, unit_name="bits/dim",
        unit_scale=BITS_PER_NAT, extra_state=None, trainer=None):
    """Train ``model`` in place.

    Args:
        model: an npar model (``params`` dict, ``loss_and_grads(*batch)``).
        optimizer: :class:`npar.train.optim.Adam` or ``SGD``.
        batch_fn: ``batch_fn(step) -> tuple`` of arguments for
            ``model.loss_and_grads``; must depend only on ``step`` (and a
            seed it closes over).
        max_steps: stop after this many steps in all (resumed runs count the
            steps already done).
        time_budget: stop after this many seconds of training in all.
        clip_norm: clip the global gradient norm to this value (None: off).
        schedule: ``"constant"`` or ``"cosine"`` learning-rate decay over the
            run (by steps when ``max_steps`` is set, else by time).
        checkpoint_path: where to write checkpoints (None: nowhere).
        checkpoint_every: seconds between checkpoints.
        state: the progress dict of a checkpoint, to resume from.
        items_per_batch: images (or sequences) per batch, for the rate shown.
        unit_name, unit_scale: how the running loss is shown (nats times
            ``unit_scale``; bits by default).
        extra_state: JSON-able dict stored in every checkpoint's progress.
        trainer: a device trainer (:func:`npar.backend.make_trainer`) that
            runs the steps on a GPU; None runs them on the CPU.

    Returns:
        the progress dict: ``step``, ``elapsed`` (training seconds),
        ``losses`` (one per step, nats), ``stopped`` (why the run ended).
    """
    if max_steps is None and time_budget is None:
        raise ValueError("give max_steps or time_budget (or both)")
    state = dict(state or {})
    state.setdefault("step", 0)
    state.setdefault("elapsed", 0.0)
    state.setdefault("losses", [])
    state["stopped"] = None
    if extra_state:
        state.update(extra_state)

    def write_checkpoint():
        if trainer is not None:
            trainer.to_host()  # parameters and optimizer state back to the host
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, state)

    def fraction_done():
        if max_steps is not None:
            return state["step"] / max_steps
        return state["elapsed"] / time_budget

    def finished():
        if max_steps is not None and state["step"] >= max_steps:
            return "max_steps"
        if time_budget is not None and state["elapsed"] >= time_budget:
            return "time_budget"
        return None

    total = max_steps if max_steps is not None else int(time_budget)
    bar = tqdm(total=total, initial=min(state["step"] if max_steps else
                                        int(state["elapsed"]), total),
               disable=not progress, unit="step" if max_steps else "s",
               dynamic_ncols=True, desc="train")
    running = None
    last_checkpoint = time.perf_counter()
    with _StopFlag() as stop:
        while finished() is None:
            start = time.perf_counter()
            batch = batch_fn(state["step"])
            try:
                if trainer is None:
                    loss, grads = model.loss_and_grads(*batch)
                    norm = clip_by_global_norm(grads, clip_norm)
                else:
                    labels = batch[-1] if len(batch) > 1 else None
                    loss, norm = trainer.loss_and_grads(batch[0], labels=labels,
                                                        clip_norm=clip_norm)
            except FloatingPointError:  # the loss saw NaN or inf logits
                loss, norm = math.nan, math.nan
            if not (math.isfinite(loss) and math.isfinite(norm)):
                bar.close()
                where = (f"the last good checkpoint {checkpoint_path} (step "
                         f"{state.get('checkpoint_step', 0)}) is kept"
                         if checkpoint_path else "no checkpoint was being written")
                raise TrainingDiverged(
                    f"training diverged at step {state['step']}: loss {loss}, "
                    f"gradient norm {norm}; {where}. Lower --lr or set --clip."
                )
            lr = learning_rate(optimizer.lr, schedule, fraction_done(),
                               warmup_fraction)
            if trainer is None:
                optimizer.step(model.params, grads, lr=lr)
            else:
                trainer.update(lr)
            seconds = time.perf_counter() - start

            state["step"] += 1
            state["elapsed"] += seconds
            state["losses"].append(float(loss))
            running = loss if running is None else 0.9 * running + 0.1 * loss
            postfix = {unit_name: f"{running * unit_scale:.4f}"}
            if items_per_batch:
                postfix["img/s" if unit_name == "bits/dim" else "items/s"] = (
                    f"{items_per_batch / seconds:.0f}")
            bar.set_postfix(postfix, refresh=False)
            bar.update(1 if max_steps else
                       min(int(state["elapsed"]), total) - bar.n)

            if time.perf_counter() - last_checkpoint >= checkpoint_every:
                state["checkpoint_step"] = state["step"]
                write_checkpoint()
                last_checkpoint = time.perf_counter()
            if stop.requested:
                state["stopped"] = "interrupted"
                break
    bar.close()
    if state["stopped"] != "interrupted":
        state["stopped"] = finished()
    state["checkpoint_step"] = state["step"]
    write_checkpoint()
    log.info("stopped after %d steps (%s), %.1f s of training", state["step"],
             state["stopped"], state["elapsed"])
    return state


def evaluate_nll(nll_sum_fn, data, batch_size=500, progress=False, desc="eval"):
    """Sum of ``nll_sum_fn(batch)`` over ``data`` in batches, float64."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    total = 0.0
    for start in tqdm(range(0, len(data), batch_size), disable=not progress,
                      desc=desc, dynamic_ncols=True):
        total += nll_sum_fn(data[start:start + batch_size])
    return float(np.float64(total))
