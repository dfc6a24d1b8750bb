"""Speed of the paper's four networks on an accelerator, with Keras 3 on JAX.

    KERAS_BACKEND=jax python benchmarks/gpu_speed.py measure --out DIR [--size 299]
    .venv/bin/python benchmarks/gpu_speed.py record DIR/gpu_speed.json

``measure`` builds each network with `cacflow.learning.models.build_model` (the workflow's own model
code, no TensorFlow) and times, in float32 and in mixed bfloat16:

- training images/s at batch 8 (the paper's) and 64: one jitted step of SGD (momentum 0.9,
  weight decay 0.005) over the model's stateless call, on a batch already on the device;
- inference ms/image at batch 1 and 32, each call waited for (what `predict` pays);
- the device's memory peak of the network's process.

The input pipeline is not part of it: these are the networks' own rates. One process per
network compiles its functions side by side with the others (compiling is CPU work) and
times them under a lock, so that no two networks share the accelerator while timed.
Results are written as JSON lines while they come, so a run cut short keeps what it measured.

``record`` appends the table to docs/benchmarks.md, beside the paper's figures.

``pack`` (here) and ``train`` (there) train cropped/ResNet50 at 299 px on real tiles:

    .venv/bin/python benchmarks/gpu_speed.py pack DIR/tiles.npz [--negatives 2000]
    KERAS_BACKEND=jax python benchmarks/gpu_speed.py train DIR/tiles.npz --out DIR

``pack`` takes the cropped tiles of a finished run (results/): every calcium tile of the
training patients (with their augmented copies) and a random sample of the others, and for
evaluation every calcium tile of the validation and test patients and a sample of the others
(AUC does not depend on the class ratio). ``train`` runs the paper's optimizer on batches
that are half calcium, all tiles held on the device, and evaluates the AUC every few seconds
until its time is up (steps/s and the curve, in gpu_train.json).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("resnet50", "inception_resnet_v2", "vgg16", "vgg19")
TRAIN_BATCHES = (8, 64)
INFER_BATCHES = (1, 32)
POLICIES = ("float32", "mixed_bfloat16")
# The paper's Table 1: inference ms/image on an RTX 2080 (it gives none for VGG19).
PAPER_MS = {"resnet50": 24, "inception_resnet_v2": 74, "vgg16": 102}
RESULTS = "gpu_speed.json"
CURVE = "gpu_train.json"


def measure(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / "timing.lock"
    lock.touch()
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "worker",
                name,
                "--out",
                str(out),
                "--size",
                str(args.size),
                "--seconds",
                str(args.seconds),
            ],
            env=env,
        )
        for name in args.networks
    ]
    deadline = time.monotonic() + args.budget
    for worker in workers:
        try:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            print(f"budget of {args.budget} s spent: worker {worker.args[3]} stopped", flush=True)


def worker(args: argparse.Namespace) -> None:
    """Compile every function of one network, then time them while holding the lock."""
    sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))
    import jax
    import keras
    import numpy as np

    from cacflow.learning.models import build_model, count_parameters

    out = Path(args.out)
    device = jax.devices()[0]
    rng = np.random.default_rng(0)
    shape = (args.size, args.size, 3)
    compile_s = 0.0
    for policy in POLICIES:
        started = time.perf_counter()
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = build_model(args.name, shape)
        row = {"network": args.name, "policy": policy, "size": args.size}
        row["parameters"] = count_parameters(model)["parameters"]
        train_step, state = _train_step(jax, keras, model)
        infer = _infer_fn(jax, model)
        jobs = []  # (row, run): compiled, ready to time
        for batch in TRAIN_BATCHES:
            x = jax.device_put(rng.random((batch, *shape), dtype=np.float32), device)
            y = jax.device_put((np.arange(batch) % 2).astype(np.int32), device)
            compiled = train_step.lower(state, x, y).compile()
            jobs.append(
                ({**row, "kind": "train", "batch": batch}, _trainer(jax, compiled, state, x, y))
            )
        trainable = [v.value for v in model.trainable_variables]
        other = [v.value for v in model.non_trainable_variables]
        for batch in INFER_BATCHES:
            x = jax.device_put(rng.random((batch, *shape), dtype=np.float32), device)
            compiled = infer.lower(trainable, other, x).compile()
            jobs.append(
                (
                    {**row, "kind": "inference", "batch": batch},
                    _predictor(compiled, trainable, other, x),
                )
            )
        compile_s += time.perf_counter() - started
        # One precision's measures as soon as they are compiled: a run cut short keeps them.
        with open(out / "timing.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for job_row, run in jobs:
                job_row.update(run(args.seconds))
                _append(out, job_row)
                print(json.dumps(job_row), flush=True)
        stats = device.memory_stats() or {}
        _append(
            out,
            {
                "kind": "memory",
                "network": args.name,
                "size": args.size,
                "peak_gib": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),
                "compile_s": round(compile_s, 1),
                "device": device.device_kind,
                "jax": jax.__version__,
                "keras": keras.__version__,
            },
        )


def _train_step(jax, keras, model):
    """A jitted SGD step over (trainable, non-trainable, optimizer) state, the way Keras'
    JAX trainer does it, and that state."""
    optimizer = keras.optimizers.SGD(learning_rate=0.001, momentum=0.9, weight_decay=0.005)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss(trainable, other, x, y):
        predicted, other = model.stateless_call(trainable, other, x, training=True)
        return loss_fn(y, predicted), other

    gradient = jax.value_and_grad(loss, has_aux=True)

    def step(state, x, y):
        trainable, other, slots = state
        (value, other), grads = gradient(trainable, other, x, y)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return value, (trainable, other, slots)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    return jax.jit(step, donate_argnums=0), state


def _infer_fn(jax, model):
    def infer(trainable, other, x):
        return model.stateless_call(trainable, other, x, training=False)[0]

    return jax.jit(infer)


def _timed(call, seconds: float) -> tuple[int, float]:
    """Calls of `call` (which waits for its result) for about `seconds`, after two warm-ups:
    (calls, elapsed)."""
    call()
    call()
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < seconds:
        call()
        n += 1
    return n, time.perf_counter() - start


def _trainer(jax, compiled, state, x, y):
    def run(seconds: float) -> dict:
        # The step donates its state: each measure starts from its own copy.
        holder = [jax.tree_util.tree_map(lambda a: a.copy(), state)]

        def call():
            loss, holder[0] = compiled(holder[0], x, y)
            loss.block_until_ready()

        n, elapsed = _timed(call, seconds)
        batch = x.shape[0]
        return {"images_per_s": round(n * batch / elapsed, 1), "steps": n}

    return run


def _predictor(compiled, trainable, other, x):
    def run(seconds: float) -> dict:
        n, elapsed = _timed(lambda: compiled(trainable, other, x).block_until_ready(), seconds)
        return {"ms_per_image": round(1000 * elapsed / (n * x.shape[0]), 3), "calls": n}

    return run


def _append(out: Path, row: dict) -> None:
    with open(out / RESULTS, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def record(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import append_section

    rows = [
        json.loads(line)
        for path in args.results
        for line in Path(path).read_text().splitlines()
        if line
    ]
    table, details = speed_table(rows)
    tiles = tiles_per_patient(Path(args.run_results))
    if tiles:
        table += "\n\n" + paper_size_table(rows, tiles, args.patients, args.epochs)
        details += (
            f". Hours for a paper-size run: {args.patients} patients, 80 % of them training "
            f"patients, plus 10 % augmented images, {args.epochs} epochs at batch 8, from the "
            "measured training img/s and the images per patient of the synthetic cohort of "
            "the run in results/ (" + ", ".join(f"{d} {n:.1f}" for d, n in tiles.items()) + ")"
        )
    if args.train:
        curve = [json.loads(line) for line in Path(args.train).read_text().splitlines() if line]
        table += "\n\n" + curve_table(curve)
        first = curve[0]
        details += (
            f". Training curve: cropped/ResNet50 at {first['size']} px, {first['policy']}, the "
            f"paper's SGD in batches of {first['batch']}, half calcium, random initialization; "
            f"{first['train_tiles']} training tiles ({first['train_calcium']} calcium) of the "
            f"training patients, AUC on {first['eval_tiles']} tiles ({first['eval_calcium']} "
            "calcium) of the validation and test patients; 'seconds' includes the compilation "
            "and the evaluations"
        )
    if args.note:
        details += ". " + args.note
    append_section("gpu_speed (Keras on JAX)", details, table, cores_used="the accelerator")


def tiles_per_patient(results: Path) -> dict[str, float]:
    """Images per patient of each dataset of a finished run (none when there is no run)."""
    counts = {}
    for dataset in ("original", "segmented", "cropped"):
        manifest = results / "datasets" / dataset / "manifest.tsv"
        if manifest.is_file():
            rows = manifest.read_text().splitlines()[1:]
            patients = {row.split("\t", 1)[0] for row in rows}
            counts[dataset] = len(rows) / max(len(patients), 1)
    return counts


def paper_size_table(rows: list[dict], tiles: dict, patients: int, epochs: int) -> str:
    """GPU hours per (dataset, network) for `epochs` epochs over the training images of
    `patients` patients, from the measured batch-8 training rates."""
    rate = {
        (r["network"], r["policy"]): r["images_per_s"]
        for r in rows
        if r["kind"] == "train" and r["batch"] == 8 and "images_per_s" in r
    }
    lines = [
        "| network | precision | " + " | ".join(f"{d} h" for d in tiles) + " | all three h |",
        "|---|---|" + "---|" * (len(tiles) + 1),
    ]
    for name in NETWORKS:
        for policy in POLICIES:
            if (name, policy) not in rate:
                continue
            hours = [
                patients * 0.8 * n * 1.1 * epochs / rate[name, policy] / 3600
                for n in tiles.values()
            ]
            cells = " | ".join(f"{h:.1f}" for h in hours)
            lines.append(f"| {name} | {policy} | {cells} | {sum(hours):.1f} |")
    return "\n".join(lines)


def curve_table(curve: list[dict]) -> str:
    lines = [
        "| step | images | seconds | training seconds | evaluation AUC |",
        "|---|---|---|---|---|",
    ]
    for r in curve:
        lines.append(
            f"| {r['step']} | {r['images']} | {r['seconds']} | {r['train_seconds']} | "
            f"{r['eval_auc']:.4f} |"
        )
    return "\n".join(lines)


def speed_table(rows: list[dict]) -> tuple[str, str]:
    """The markdown table of `measure`'s rows and the line that describes the run."""
    memory = {r["network"]: r for r in rows if r["kind"] == "memory"}
    timed = {
        (r["network"], r["policy"], r["kind"], r["batch"]): r for r in rows if r["kind"] != "memory"
    }
    lines = [
        (
            "| network | input px | parameters | precision | train img/s, batch 8 | batch 64 "
            "| inference ms/img, batch 1 | batch 32 | paper ms/img (RTX 2080) | memory peak GiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in NETWORKS:
        for policy in POLICIES:
            cells = [
                timed.get((name, policy, kind, b))
                for kind, batches in (("train", TRAIN_BATCHES), ("inference", INFER_BATCHES))
                for b in batches
            ]
            first = next((c for c in cells if c), None)
            if first is None:  # cut short while compiling: say so, do not drop the row
                first = next((r for r in timed.values() if r["network"] == name), None)
                if first is None:
                    continue
            values = [
                str(c["images_per_s"])
                if c and "images_per_s" in c
                else str(c["ms_per_image"])
                if c and "ms_per_image" in c
                else "not measured"
                for c in cells
            ]
            lines.append(
                f"| {name} | {first['size']} | {first['parameters'] / 1e6:.1f} M | {policy} | "
                + " | ".join(values)
                + f" | {PAPER_MS.get(name, '-')} | {memory.get(name, {}).get('peak_gib', '?')} |"
            )
    any_memory = next(iter(memory.values()), {})
    details = (
        f"Keras {any_memory.get('keras', '?')} on JAX {any_memory.get('jax', '?')}, "
        f"{any_memory.get('device', 'accelerator')}. Random inputs already on the device; "
        "training: one jitted SGD step (momentum 0.9, weight decay 0.005) per batch, "
        "BatchNormalization and dropout in training mode; inference: one jitted forward pass "
        "per call, each call waited for. The input pipeline is not included. Memory peak: the "
        "largest device memory in use by the network's process ('?': the process was stopped "
        "before it could report). 'not measured': the run's time budget ended while the "
        "functions were compiled. Compile seconds per network (the precisions measured, all "
        "batches, compiled side by side with the other networks): "
        + ", ".join(f"{n} {m.get('compile_s')}" for n, m in memory.items())
    )
    return "\n".join(lines), details


def pack(args: argparse.Namespace) -> None:
    """Cropped tiles of a finished run into one compressed .npz (see the module docstring)."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))
    from cacflow.learning.inputs import split_table

    results = Path(args.results)
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for part, splits, augmented in (
        ("train", ("train",), results / "augmented" / "cropped"),
        ("eval", ("validation", "test"), None),
    ):
        files, labels = [], []
        for split in splits:
            table = split_table(
                results / "datasets" / "cropped",
                results / "splits" / "patients.tsv",
                split,
                augmented,
            )
            files += table.files
            labels += table.labels.tolist()
        labels = np.array(labels, np.int8)
        negatives = np.flatnonzero(labels == 0)
        keep = np.flatnonzero(labels == 1)
        count = args.negatives if part == "train" else args.negatives // 2
        keep = np.sort(np.r_[keep, rng.choice(negatives, min(count, len(negatives)), False)])
        arrays[f"{part}_x"] = np.stack([np.asarray(Image.open(files[i])) for i in keep])
        arrays[f"{part}_y"] = labels[keep]
        print(f"{part}: {len(keep)} tiles, {int(labels[keep].sum())} calcium", flush=True)
    Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.npz, **arrays)
    print(f"{args.npz}: {Path(args.npz).stat().st_size / 2**20:.1f} MiB")


def train(args: argparse.Namespace) -> None:
    """Cropped/ResNet50 at the tiles' size with the paper's SGD in balanced batches, for
    `args.seconds`; the evaluation AUC every `args.every` seconds."""
    sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from cacflow.learning.models import build_model

    data = np.load(args.npz)
    train_x = jax.device_put(data["train_x"])
    eval_x = jax.device_put(data["eval_x"])
    train_y, eval_y = data["train_y"], data["eval_y"]
    size = train_x.shape[1]
    keras.mixed_precision.set_global_policy(args.policy)
    keras.utils.set_random_seed(args.seed)
    model = build_model("resnet50", (size, size, 3))
    step, state = _train_step(jax, keras, model)
    forward = _infer_fn(jax, model)

    def images(x, index):
        stored = x[index].astype(jnp.float32) * (1.0 / 255.0)
        return jnp.repeat(stored[..., None], 3, axis=-1) if stored.ndim == 3 else stored

    gather = jax.jit(images)
    positives, negatives = np.flatnonzero(train_y == 1), np.flatnonzero(train_y == 0)
    half = args.batch // 2
    rng = np.random.default_rng(args.seed)
    labels = jax.device_put(np.r_[np.ones(half), np.zeros(args.batch - half)].astype(np.int32))

    def evaluate() -> float:
        trainable, other, _ = state
        scores = []
        for start in range(0, len(eval_y), 256):
            index = jnp.arange(start, min(start + 256, len(eval_y)))
            scores.append(np.asarray(forward(trainable, other, gather(eval_x, index)))[:, 1])
        return float(roc_auc_score(eval_y, np.concatenate(scores)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps, next_eval, train_s = 0, 0.0, 0.0
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= next_eval or elapsed >= args.seconds:
            auc = evaluate()
            row = {
                "step": steps,
                "images": steps * args.batch,
                "seconds": round(elapsed, 1),
                "train_seconds": round(train_s, 1),
                "eval_auc": round(auc, 4),
                "batch": args.batch,
                "policy": args.policy,
                "size": int(size),
                "train_tiles": len(train_y),
                "train_calcium": int(train_y.sum()),
                "eval_tiles": len(eval_y),
                "eval_calcium": int(eval_y.sum()),
            }
            with open(out / CURVE, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            next_eval = elapsed + args.every
            if elapsed >= args.seconds:
                break
        tick = time.perf_counter()
        for _ in range(args.chunk):
            index = np.r_[rng.choice(positives, half), rng.choice(negatives, args.batch - half)]
            loss, state = step(state, gather(train_x, jnp.asarray(index)), labels)
        loss.block_until_ready()
        train_s += time.perf_counter() - tick
        steps += args.chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("measure", help="time the networks (on the accelerator)")
    run.add_argument("--out", required=True, help="folder for gpu_speed.json")
    run.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    run.add_argument("--size", type=int, default=299, help="input side in px (default 299)")
    run.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measure")
    run.add_argument("--budget", type=float, default=420, help="stop workers after this")
    one = commands.add_parser("worker")
    one.add_argument("name", choices=NETWORKS)
    one.add_argument("--out", required=True)
    one.add_argument("--size", type=int, default=299)
    one.add_argument("--seconds", type=float, default=2.0)
    rec = commands.add_parser("record", help="append a measure's JSON to docs/benchmarks.md")
    rec.add_argument("results", nargs="+", help="gpu_speed.json files of measure (later wins)")
    rec.add_argument("--train", help="the gpu_train.json of train")
    rec.add_argument("--run-results", default=str(REPO_ROOT / "results"), help="a finished run")
    rec.add_argument("--patients", type=int, default=2300, help="paper-size cohort")
    rec.add_argument("--epochs", type=int, default=30)
    rec.add_argument("--note", default="", help="added to the record's description")
    packer = commands.add_parser("pack", help="cropped tiles of results/ into one .npz")
    packer.add_argument("npz")
    packer.add_argument("--results", default=str(REPO_ROOT / "results"))
    packer.add_argument("--negatives", type=int, default=2000, help="training non-calcium tiles")
    packer.add_argument("--seed", type=int, default=0)
    trainer = commands.add_parser("train", help="train cropped/ResNet50 on a packed .npz")
    trainer.add_argument("npz")
    trainer.add_argument("--out", required=True)
    trainer.add_argument("--seconds", type=float, default=180)
    trainer.add_argument("--every", type=float, default=15, help="seconds between evaluations")
    trainer.add_argument("--batch", type=int, default=8, help="half calcium (the paper: 8)")
    trainer.add_argument("--chunk", type=int, default=20, help="steps between clock reads")
    trainer.add_argument("--policy", default="float32", choices=POLICIES)
    trainer.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    commands = {"measure": measure, "worker": worker, "record": record, "pack": pack}
    commands["train"] = train
    commands[args.command](args)


if __name__ == "__main__":
    main()
