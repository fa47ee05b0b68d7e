#!/usr/bin/env python3
"""Measure the full-size E2B/E4B-shaped models and write docs/performance.md from the measurements.

Runs on the files scripts/make_fullsize_gemma4.py makes (random weights, real shapes and types:
speed and memory do not depend on what the weights say). Each section's results go to a JSON file
next to the models, so a section can be rerun alone; the markdown is rendered from that file only.

    python scripts/fullsize_report.py                        # every section (~50 min on 2 cores)
    python scripts/fullsize_report.py --sections bench,memory
    python scripts/fullsize_report.py --render               # markdown from the saved results

Sections:
  files      each file's size beside the published file of the same name (FACTS.md)
  bandwidth  a STREAM-style probe (numpy copy and triad, 1 and 2 processes at once)
  bench      `edge-gemma bench` beside llama-bench, pp512/tg128 at 1 and 2 threads, decode as GB/s
  audio      audio encoder ms per second of speech (2/10/30 s clips) and audio-token prefill rate
  voice      full voice turns from a file (scripts/voice_latency.py) on E2B: each stage's delay
  listening  E2B end of speech -> first token for 2-20 s questions, heard whole or while spoken; a Pi 5 on paper
  listenparams  prefill rate by batch size and the encoder's rate per projector: the listening policy replayed
  vision     E2B and E4B: vision encode and image-token prefill per budget (70-1120), the memory each budget adds
  memory     peak RSS of load / 4k-context turn / 30 s audio turn, lazy PLE on and off, vs the plan
  cgroup     each small board's plan run in a memory cgroup of its RAM less its OS headroom (root)
  tools      decode with a tool offered against without (128/512/1,024 tokens, tiny and E2B); a forced call
  schema     decode held to a JSON schema (structured output) against free decode, 128 and 1,024 tokens
  wake       microWakeWord against openWakeWord: recall in noise, false accepts per hour (scripts/wake_words.py)
  echo       replies through a simulated room, the user interrupting: ERLE, self-interruptions (echo_bench.py)
  hacommand  "Turn on the kitchen light" through `edge-gemma wyoming` (scripts/ha_command.py): cold, steady, restarted
  boards     E4B and E2B split over an `edge-gemma worker` on a stand-in board (scripts/boards_bench.py, root)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.bench.performance_doc import merge_sections, render_markdown
from edge.model.synthetic import FULLSIZE_DIR as MODELS
from edge.model.synthetic import REPO

RESULTS = MODELS / "report.json"
DOC = REPO / "docs" / "performance.md"
LLAMA_BENCH = Path(
    os.environ.get("LLAMA_BENCH", "/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench")
)
CGROUP = Path("/sys/fs/cgroup/memory")
MIB, GIB = 2**20, 2**30
SECTIONS = (
    "files",
    "bandwidth",
    "bench",
    "audio",
    "voice",
    "listening",
    "listenparams",
    "vision",
    "memory",
    "cgroup",
    "tools",
    "schema",
    "hacommand",
    "wake",
    "echo",
    "boards",
)
WITHOUT_MODEL = {"wake", "echo"}  # sections that measure audio alone: no full-size file needed
PI5_PREFILL_TPS = 30.0  # E2B on a Pi 5: 28-32 tok/s published (FACTS.md)
# The small boards whose plans must hold; their model file and settings come from the profile.
CGROUP_PROFILES = ("pi5-4gb", "pi5-8gb", "orin-nano-8gb")


def text_file(model: str, quant: str) -> Path:
    return MODELS / f"gemma-4-{model.upper()}-shaped-{quant}.gguf"


def mmproj_file(model: str, precision: str) -> Path:
    return MODELS / f"mmproj-gemma-4-{model.upper()}-shaped-{precision}.gguf"


# -- measurements that run in a child process (fresh peak RSS, and alone in a cgroup) -------------


def speech(seconds: float) -> np.ndarray:
    """`seconds` of real espeak-ng speech at 16 kHz: sentences back to back, cut to length."""
    from edge.audio.tts_backends import espeak_pcm as spoken

    text = (
        "Turn on the kitchen lights, then set a timer for ten minutes and read me the weather. "
        "What is the capital of France, and how far away is the moon tonight? "
    )
    pcm = spoken(text * 4)
    n = int(seconds * 16_000)
    return np.resize(pcm, n).astype(np.float32)  # repeats if the speech is shorter than asked


def memory_now() -> dict[str, int]:
    """Peak and current resident memory of this process (bytes), from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


class AnonPeak:
    """The kernel keeps a peak for RSS (VmHWM) but not for its anonymous part: sample it every 20 ms.

    Anonymous memory is what cannot be dropped under pressure (no swap on these boards); file pages
    of the mapped model are clean and can be read again."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, memory_now()["RssAnon"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, memory_now()["RssAnon"])


def child(args: argparse.Namespace) -> None:
    """Load, run one task, print what it took as JSON (the parent reads the last line)."""
    from edge.model.engine import LoadedModel
    from edge.settings import RunSettings

    anon = AnonPeak()

    settings = RunSettings(
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=512,
        n_ubatch=args.ubatch,
        lazy_mode=args.lazy,
    )
    out: dict = {"task": args.task}
    start = time.perf_counter()
    with LoadedModel(args.model, settings) as loaded:
        engine = loaded.engine
        out["load_s"] = time.perf_counter() - start
        out["after_load"] = memory_now()
        if args.task == "ctx4k":
            rng = np.random.default_rng(4096)
            tokens = [loaded.llama.token_bos()] + rng.integers(1000, 200_000, args.ctx - 64).tolist()
            t = time.perf_counter()
            engine.extend_tokens(tokens)
            out["prefill_tps"] = len(tokens) / (time.perf_counter() - t)
            for i in range(16):  # a short reply (which tokens does not matter to memory or speed)
                engine.extend_tokens([1000 + i])
        elif args.task in ("audio30", "audio"):
            projector = loaded.attach_projector(args.mmproj)
            out["after_mmproj"] = memory_now()
            prompt = loaded.chat_prompt([{"role": "user", "content": projector.marker + "Answer briefly."}]).text
            clips = [30.0] if args.task == "audio30" else [float(s) for s in args.clips.split(",")]
            out["clips"] = []
            for seconds in clips:
                pcm = speech(seconds)
                t = time.perf_counter()
                r = engine.prefill(prompt, [pcm], fresh=True)
                total = time.perf_counter() - t
                t = time.perf_counter()
                for i in range(16):
                    engine.extend_tokens([1000 + i])
                decode = time.perf_counter() - t
                out["clips"].append(
                    {
                        "seconds": seconds,
                        "audio_tokens": r.media_tokens,
                        "encode_ms": r.encode_ms,
                        "eval_s": total,
                        # everything in the evaluation that is not the encoder: audio + text prefill
                        "prefill_tps": r.evaluated / max(1e-9, total - r.encode_ms / 1000),
                        "decode_tps": 16 / decode,
                    }
                )
        elif args.task == "image":
            from edge.bench.pictures import test_photo

            projector = loaded.attach_projector(args.mmproj)
            out["after_mmproj"] = memory_now()
            out["anon_before_image"] = memory_now()["RssAnon"]
            picture = projector.fit_image(test_photo(), args.budget)
            prompt = loaded.chat_prompt([{"role": "user", "content": projector.marker + "What is this?"}]).text
            # A first prefill pays one-time costs (graph allocation, the first per-layer rows read):
            # warm up on text, so the figures are the picture's own.
            engine.extend_tokens([loaded.llama.token_bos()] + list(range(1000, 1128)))
            t = time.perf_counter()
            r = engine.prefill(prompt, [picture], fresh=True)
            total = time.perf_counter() - t
            out["image"] = {
                "budget": args.budget,
                "size": [picture.width, picture.height],
                "image_tokens": r.media_tokens,
                "prompt_tokens": r.prompt_tokens,
                "encode_ms": r.encode_ms,
                "prefill_s": round(total - r.encode_ms / 1000, 3),  # image tokens and the text around them
            }
        out["peak"] = memory_now()  # before the model is freed: VmRSS is the end of the turn's
        out["peak_anon"] = anon.stop()
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out), flush=True)


def run_child(
    model: Path,
    task: str,
    *,
    ctx: int,
    ubatch: int,
    lazy: str,
    mmproj: Path | None = None,
    clips: str = "",
    budget: int = 0,
    cgroup: Path | None = None,
) -> dict:
    cmd = [sys.executable, __file__, "child", "--model", str(model), "--task", task, "--ctx", str(ctx)]
    cmd += ["--ubatch", str(ubatch), "--lazy", lazy, "--threads", str(min(2, os.cpu_count() or 1))]
    if budget:
        cmd += ["--budget", str(budget)]
    if mmproj is not None:
        cmd += ["--mmproj", str(mmproj)]
    if clips:
        cmd += ["--clips", clips]
    if cgroup is not None:  # the child joins the cgroup itself before it loads anything
        cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = {"returncode": proc.returncode}
    if proc.returncode < 0 or proc.returncode > 128:
        sig = -proc.returncode if proc.returncode < 0 else proc.returncode - 128
        result["signal"] = signal.Signals(sig).name
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    elif proc.returncode:
        result["stderr"] = proc.stderr.strip().splitlines()[-3:]
    return result


# -- sections --------------------------------------------------------------------------------------


def files() -> dict:
    from edge.model.synthetic import SHAPES, file_names

    out = {}
    for key in ("e2b", "e4b"):
        shape = SHAPES[key]
        published = dict(shape.published)
        for kind, name in file_names(shape).items():
            if (MODELS / name).exists():
                out[name] = {"bytes": (MODELS / name).stat().st_size, "published": published.get(kind)}
    return out


def _stream(seconds: float, n: int, queue) -> None:
    a, b, c = np.ones(n), np.ones(n), np.ones(n)  # all written once: no first-touch page faults timed
    best_copy = best_triad = 0.0
    deadline, rounds = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline or rounds < 3:
        rounds += 1
        t = time.perf_counter()
        np.copyto(c, a)
        best_copy = max(best_copy, 2 * a.nbytes / (time.perf_counter() - t))  # read a, write c
        t = time.perf_counter()
        np.multiply(b, 3.0, out=c)
        c += a
        best_triad = max(best_triad, 4 * a.nbytes / (time.perf_counter() - t))  # read b,c,a; write c
    queue.put((best_copy, best_triad))


def bandwidth() -> dict:
    """Best copy / triad GB/s over 5 s, with 1 and 2 processes at once (numpy is single-threaded)."""
    n = 64 * 2**20  # 512 MB per array: far beyond any cache
    out = {}
    for procs in (1, 2):
        q = multiprocessing.Queue()
        ps = [multiprocessing.Process(target=_stream, args=(5.0, n, q)) for _ in range(procs)]
        for p in ps:
            p.start()
        got = [q.get() for _ in ps]
        for p in ps:
            p.join()
        out[str(procs)] = {"copy_gbs": sum(g[0] for g in got) / 1e9, "triad_gbs": sum(g[1] for g in got) / 1e9}
    return out


def bytes_per_token(path: Path) -> int:
    """Weight bytes one decoded token reads: every tensor but the per-layer-embedding table, of
    which a token reads one row (the token table is read whole: it is also the output head)."""
    from edge.model.gguf import inspect_gguf

    return sum(t.n_bytes for t in inspect_gguf(path).tensors if t.name != "per_layer_token_embd.weight")


def bench(reps: int, only: list[str], done: dict) -> dict:
    """Each file's figures, kept from earlier runs for files not measured this time (`only`)."""
    out = dict(done)
    for model in ("e2b", "e4b"):
        for quant in ("Q4_0", "Q4_K_M"):
            path = text_file(model, quant)
            if not path.exists() or (only and f"{model}-{quant}" not in only):
                continue
            common = [
                "-m",
                str(path),
                "-t",
                "1,2",
                "-p",
                "512",
                "-n",
                "128",
                "-r",
                str(reps),
                "-b",
                "512",
                "-ub",
                "512",
            ]
            ours = subprocess.run(
                [sys.executable, "-m", "edge.cli", "bench", *common, "--no-tune", "-d", "generic", "-o", "json"],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            theirs = subprocess.run(
                [str(LLAMA_BENCH), *common, "-fa", "1", "-o", "json"], capture_output=True, text=True
            )
            entry = {"bytes_per_token": bytes_per_token(path), "file_bytes": path.stat().st_size}
            for name, proc in (("edge", ours), ("llama_bench", theirs)):
                try:
                    records = json.loads(proc.stdout)
                except json.JSONDecodeError:
                    entry[name] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
                    continue
                entry[name] = {
                    f"{'pp' if r['n_prompt'] else 'tg'}-t{r['n_threads']}": [r["avg_ts"], r["stddev_ts"]]
                    for r in records
                    if "avg_ts" in r
                }
            out[f"{model}-{quant}"] = entry
            print(f"bench {model} {quant}: {entry}", flush=True)
            _save("bench", out)  # a file's figures are kept even if a later one is stopped
    return out


def audio() -> dict:
    out = {}
    for precision in ("F16", "Q8_0"):
        r = run_child(
            text_file("e2b", "Q4_0"),
            "audio",
            ctx=2048,
            ubatch=512,
            lazy="on",
            mmproj=mmproj_file("e2b", precision),
            clips="2,10,30",
        )
        out[precision] = r
        print(f"audio {precision}: {r.get('clips', r)}", flush=True)
    return out


def voice() -> dict:
    """Three spoken questions through `edge-gemma voice` on E2B Q4_0 with the Q8_0 projector."""
    import voice_latency

    path = MODELS / "voice.json"
    args = [
        "--turns",
        "3",
        "--gap",
        "10",
        "-m",
        str(text_file("e2b", "Q4_0")),
        "--mmproj",
        str(mmproj_file("e2b", "Q8_0")),
    ]
    # Random weights never choose to stop: cap the reply, or each turn queues behind the last one's.
    voice_latency.main([*args, "--json", str(path), "--", "--max-tokens", "32"])
    turns = json.loads(path.read_text())["turns"]
    keep = ("timeline", "model_s", "pipeline_s", "reply_tokens", "audio_tokens")
    return {"turns": [{k: t[k] for k in keep} | {"transcript_chars": len(t["heard"])} for t in turns]}


def listening() -> dict:
    """Questions of 2-20 s arriving at speaking pace to AudioConversation on E2B Q4_0 with the F16
    projector (pi5's), heard whole at the end of speech or while spoken (a step per second of new
    speech, one at a time, as the voice loop does). The reply starts at the end of speech."""
    from edge.model.engine import GREEDY, LoadedModel
    from edge.settings import RunSettings
    from edge.voice.audio_conversation import AudioConversation

    settings = RunSettings(n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2)
    out = []
    with LoadedModel(text_file("e2b", "Q4_0"), settings) as loaded:
        loaded.attach_projector(mmproj_file("e2b", "F16"))
        for seconds in (2, 5, 10, 20):
            pcm = speech(seconds)
            for early in (False, True):
                loaded.engine.reset()
                conversation = AudioConversation(loaded)
                conversation.prime()
                steps, t0 = [], time.perf_counter()
                end = t0 + seconds
                heard = 0.0
                while (now := time.perf_counter()) < end:
                    if early and now - t0 - heard >= 1.0:
                        heard = now - t0
                        conversation.listen(pcm[: int(heard * 16_000)])
                        steps.append((now - end, time.perf_counter() - end))
                    else:
                        time.sleep(0.005)
                start = time.perf_counter()
                generation = conversation.reply(pcm, sampling=GREEDY.with_(max_tokens=1))
                next(iter(generation), None)
                first = time.perf_counter()
                work = conversation.last_listening
                case = {
                    "seconds": seconds,
                    "early": early,
                    "reply_start_s": round(start - end, 3),
                    "first_token_s": round(first - end, 3),
                    "audio_tokens": len(conversation.last_clip.embeddings),
                    "audio_tokens_early": generation.prefill.last_media_reused,
                    "evaluated_at_end": generation.prefill.evaluated,
                    "encode_at_end_s": round(work.final_encode_seconds, 3),
                    "encoded_audio_s": round(work.encoded_seconds, 2),
                    "steps": [[round(a, 3), round(b, 3)] for a, b in steps],
                }
                out.append(case)
                print(f"listening {case}", flush=True)
    return {"cases": out, "pi5_prefill_tps": PI5_PREFILL_TPS}


LISTEN_BATCHES = (1, 6, 12, 24, 48, 96, 512)


def listenparams() -> dict:
    """What the listening policy's replay needs, measured on E2B Q4_0 at 2 threads: prefill tokens/s
    at each batch size (a voice turn's depth, 1,100 tokens), and the audio encoder's seconds per
    second of speech with the F16 and the Q8_0 projector (a 10 s clip, median of 3)."""
    import statistics

    from edge.bench.measure import BenchContext
    from edge.model.engine import LoadedModel
    from edge.settings import RunSettings

    settings = RunSettings(n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2)
    prefill, encode = {}, {}
    with LoadedModel(text_file("e2b", "Q4_0"), settings) as loaded:
        with BenchContext(loaded, n_batch=512, n_ubatch=512) as bench:
            for batch in LISTEN_BATCHES:
                n = 512 if batch == 512 else 96
                rates = []
                for _ in range(3):
                    bench.fill_depth(1100, 512)
                    rates.append(n / (bench.prompt(n, batch) / 1e9))
                prefill[batch] = round(statistics.median(rates), 2)
                print(f"listenparams prefill batch {batch}: {prefill[batch]} tok/s", flush=True)
        pcm = speech(10)
        for precision in ("F16", "Q8_0"):
            projector = loaded.attach_projector(mmproj_file("e2b", precision))
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                projector.encode_audio(pcm)
                times.append(time.perf_counter() - t0)
            encode[precision] = round(statistics.median(times) / 10, 4)
            print(f"listenparams encoder {precision}: {encode[precision]} s per s of speech", flush=True)
    return {"prefill_tps_by_batch": prefill, "encode_s_per_s": encode, "pi5_prefill_tps": PI5_PREFILL_TPS}


def vision() -> dict:
    """Each budget in its own process (E2B and E4B Q4_0 with their F16 projectors, pi5's settings
    otherwise): the image tokens it makes of a 640x480 photo, the encode, the prefill, and the memory
    the projector and the image add."""
    from edge.vision.images import IMAGE_TOKEN_BUDGETS

    out = {}
    for model in ("e2b", "e4b"):
        text, mm = text_file(model, "Q4_0"), mmproj_file(model, "F16")
        if not (text.exists() and mm.exists()):
            print(f"vision {model}: no {text.name} or {mm.name}; skipped", flush=True)
            continue
        runs = []
        for budget in IMAGE_TOKEN_BUDGETS:
            r = run_child(text, "image", ctx=2048, ubatch=128, lazy="on", mmproj=mm, budget=budget)
            runs.append(r)
            print(f"vision {model} {budget}: {r.get('image', r)}", flush=True)
        out[model] = runs
    return out


def decode_models():
    """(name, loaded model, seeds, repeats) for the decode-cost sections: the tiny Gemma 4 and E2B Q4_0
    at 2 threads, each loaded in turn (freed before the next). The tiny model's replies take a second
    or less, so each is decoded 3 times: one busy moment moves a single run's rate by 10%."""
    from edge.model.engine import LoadedModel
    from edge.model.synthetic import TINY_DIR, TINY_TEXT_NAME
    from edge.settings import RunSettings

    settings = RunSettings(n_ctx=2048, n_threads=2, n_threads_batch=2, n_batch=512, n_ubatch=512)
    for name, path, seeds, repeats in (
        ("tiny", TINY_DIR / TINY_TEXT_NAME, (1, 2, 3), 3),
        ("e2b-Q4_0", text_file("e2b", "Q4_0"), (1, 2), 1),
    ):
        with LoadedModel(path, settings) as loaded:
            yield name, loaded, seeds, repeats


def tools() -> dict:
    """Decode with one tool offered (tool_choice auto: the lazy call grammar) against without, at the
    same seed, on the tiny Gemma 4 and E2B Q4_0; then a call forced from the first token (Home
    Assistant's 14 intents) against free text of its length, and under a grammar that refuses nothing;
    then Home Assistant calls as a trained model writes them, one token at a time against drafted."""
    from edge.assist.ha_intents import HA_INTENTS
    from edge.bench.tool_decode import drafted_calls, forced_vs_free, offered_vs_free

    out = {}
    for name, loaded, seeds, repeats in decode_models():
        rows = offered_vs_free(loaded, HA_INTENTS[:1], (128, 512, 1024), seeds, repeats)
        forced = forced_vs_free(loaded, HA_INTENTS, (1, 2, 3))
        calls = drafted_calls(loaded, HA_INTENTS)
        out[name] = {
            "offered": [r.to_dict() for r in rows],
            "forced": forced.to_dict(),
            "calls": [c.to_dict() for c in calls],
            "seeds": list(seeds),
        }
        print(f"tools {name}: {out[name]}", flush=True)
    return out


def schema() -> dict:
    """Decode held to a JSON schema (structured output) against free decode, at 128 and 1,024 tokens,
    on the tiny Gemma 4 and E2B Q4_0."""
    from edge.bench.tool_decode import schema_vs_free

    out = {}
    for name, loaded, seeds, repeats in decode_models():
        rows = schema_vs_free(loaded, (128, 1024), seeds, repeats)
        out[name] = {"rows": [r.to_dict() for r in rows], "seeds": list(seeds), "repeats": repeats}
        print(f"schema {name}: {out[name]}", flush=True)
    return out


def wake() -> dict:
    """Wake words, both engines (scripts/wake_words.py); no model files needed."""
    import wake_words

    return wake_words.measure()


def echo() -> dict:
    """The echo canceller on 50 replies through simulated rooms (scripts/echo_bench.py); no model needed."""
    import echo_bench

    return echo_bench.measure(50)


def hacommand() -> dict:
    """A Home Assistant command through `edge-gemma wyoming` at E2B size (scripts/ha_command.py)."""
    import ha_command

    return ha_command.run(text_file("e2b", "Q4_0"), mmproj_file("e2b", "Q8_0"), threads=2)


def boards() -> dict:
    """E4B with its F16 projector on a 4 GB board, alone and with a worker over Ethernet and Wi-Fi; E2B
    alone and split (scripts/boards_bench.py): namespaces, shaped links and cgroups, all on this machine."""
    import boards_bench

    models = {size: (text_file(size, "Q4_0"), mmproj_file(size, "F16")) for size in ("e4b", "e2b")}
    return boards_bench.measure({k: v for k, v in models.items() if v[0].exists() and v[1].exists()})


def draw_listening(data: dict, path: Path, seconds: int = 5) -> None:
    """One question's stages on a time axis: speech and the model's work, heard whole and while spoken."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in data["cases"] if c["seconds"] == seconds]
    fig, ax = plt.subplots(figsize=(9, 2.6))
    for row, case in enumerate(sorted(cases, key=lambda c: not c["early"])):
        y = row * 2
        ax.broken_barh([(-seconds, seconds)], (y + 1, 0.8), color="#9ecae1")
        steps = [(a, b - a) for a, b in case["steps"]]
        ax.broken_barh(steps, (y, 0.8), color="#fdae6b", edgecolor="white")
        ax.broken_barh(
            [(case["reply_start_s"], case["first_token_s"] - case["reply_start_s"])], (y, 0.8), color="#e6550d"
        )
        ax.text(case["first_token_s"] + 0.1, y + 0.3, f"first token {case['first_token_s']:.1f} s", fontsize=8)
        ax.text(-seconds - 0.2, y + 0.9, "while spoken" if case["early"] else "whole", ha="right", fontsize=9)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-seconds - 2.2, max(c["first_token_s"] for c in cases) + 2)
    ax.set_yticks([])
    ax.set_xlabel(
        "seconds from the end of speech (blue: speech, light orange: listening steps, dark: the reply's prefill)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predicted(
    model: Path, *, ctx: int, ubatch: int, lazy: str, mmproj: Path | None, image_tokens: int = 70
) -> dict[str, int]:
    """What `edge-gemma plan`'s arithmetic (check_fits) says this process needs, line by line."""
    from edge.device.info import nominal_device
    from edge.model.gguf import inspect_gguf
    from edge.model.memory import check_fits
    from edge.settings import RunSettings

    settings = RunSettings(n_ctx=ctx, n_batch=512, n_ubatch=ubatch, lazy_mode=lazy, image_tokens=image_tokens)
    fit = check_fits(inspect_gguf(model), settings, nominal_device("pc", 24), mmproj.stat().st_size if mmproj else 0)
    return {line.label: line.bytes for line in fit.lines if line.bytes}


def memory() -> dict:
    out = {}
    runs = [("e2b", "Q4_0", task, lazy) for task in ("load", "ctx4k", "audio30") for lazy in ("on", "off")]
    runs += [("e4b", "Q4_0", "load", lazy) for lazy in ("on", "off")]
    for model, quant, task, lazy in runs:
        key = f"{model}-{quant}-{task}-lazy_{lazy}"
        case = memory_case(key)
        r = run_child(case.pop("model"), task, **case)
        r["predicted"] = predicted(text_file(model, quant), **case)
        out[key] = r
        plan_mib = sum(r["predicted"].values()) / MIB
        print(f"memory {model} {quant} {task} lazy {lazy}: {r.get('peak')}, plan {plan_mib:.0f} MiB", flush=True)
    return out


def _drop_from_page_cache(*paths: Path) -> None:
    """So that the cgroup run reads (and is charged for) every page it uses."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cgroup() -> dict:
    from edge.profiles import load_profiles

    if not (CGROUP / "memory.limit_in_bytes").exists() or os.geteuid() != 0:
        return {"error": "needs root and a cgroup v1 memory controller at /sys/fs/cgroup/memory"}
    profiles, out = load_profiles(), {}
    # Each board in its budget with a 30 s audio turn; then the 4 GB plan without lazy PLE, in no more
    # than the plan's own figure for the process (what it claims the model, projector and buffers
    # need), and with a picture at its profile's image-token budget instead of audio.
    runs = [(name, None, "budget", "audio30") for name in CGROUP_PROFILES] + [("pi5-4gb", "off", "budget", "audio30")]
    runs += [
        ("pi5-4gb", None, "plan", "audio30"),
        ("pi5-4gb", None, "budget", "image"),
        ("pi5-4gb", None, "plan", "image"),
    ]
    for name, lazy_override, limit_from, task in runs:
        p = profiles[name]
        quant = next(q for q in p.quants if text_file(p.model, q).exists())
        mm = next(mmproj_file(p.model, q) for q in p.mmproj_quants if mmproj_file(p.model, q).exists())
        lazy = lazy_override or p.lazy_mode
        plan = predicted(
            text_file(p.model, quant), ctx=p.n_ctx, ubatch=p.n_ubatch, lazy=lazy, mmproj=mm, image_tokens=p.image_tokens
        )
        limit = p.memory_gb * GIB - p.os_headroom_mb * MIB if limit_from == "budget" else sum(plan.values())
        group = CGROUP / f"edge-proof-{os.getpid()}"
        group.mkdir()
        try:
            (group / "memory.limit_in_bytes").write_text(str(limit))
            (group / "memory.swappiness").write_text("0")
            _drop_from_page_cache(text_file(p.model, quant), mm)
            start = time.perf_counter()
            r = run_child(
                text_file(p.model, quant),
                task,
                ctx=p.n_ctx,
                ubatch=p.n_ubatch,
                lazy=lazy,
                mmproj=mm,
                budget=p.image_tokens if task == "image" else 0,
                cgroup=group,
            )
            r["wall_s"] = time.perf_counter() - start
            stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
            r.update(
                profile=name,
                quant=quant,
                mmproj=mm.name,
                lazy=lazy,
                n_ctx=p.n_ctx,
                limit=limit,
                max_usage=int((group / "memory.max_usage_in_bytes").read_text()),
                failcnt=int((group / "memory.failcnt").read_text()),
                pgmajfault=int(stat.get("total_pgmajfault", 0)),
                oom_kills=int(
                    dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines()).get(
                        "oom_kill", 0
                    )
                ),
                limit_from=limit_from,
                turn=task,
                image_tokens=p.image_tokens,
                predicted=plan,
            )
        finally:
            for _ in range(50):  # the child has exited; its pages may take a moment to uncharge
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        out[f"{name}-lazy_{lazy}-{limit_from}" + ("-image" if task == "image" else "")] = r
        print(
            f"cgroup {name} lazy {lazy}: rc {r['returncode']}, max {r['max_usage'] / MIB:.0f} of {limit / MIB:.0f} MiB",
            flush=True,
        )
    return out


def memory_case(key: str) -> dict:
    """The settings of a memory case from its key, e.g. e2b-Q4_0-audio30-lazy_on."""
    model, quant, task, lazy = key.split("-", 3)
    return {
        "model": text_file(model, quant),
        "ctx": 4096 if task == "ctx4k" else 2048,
        "ubatch": 512,
        "lazy": lazy.removeprefix("lazy_"),
        "mmproj": mmproj_file(model, "Q8_0") if task.startswith("audio") else None,
    }


def repredict(results: dict) -> None:
    """The plan columns from the planner as it is now (a planner fix shows in the next render)."""
    from edge.profiles import load_profiles

    for key, r in results.get("memory", {}).get("data", {}).items():
        r["predicted"] = predicted(**memory_case(key))
    profiles = load_profiles()
    for r in results.get("cgroup", {}).get("data", {}).values():
        if "profile" in r:
            p = profiles[r["profile"]]
            model = text_file(p.model, r["quant"])
            r["predicted"] = predicted(
                model,
                ctx=r["n_ctx"],
                ubatch=p.n_ubatch,
                lazy=r["lazy"],
                mmproj=MODELS / r["mmproj"],
                image_tokens=p.image_tokens,
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--model", required=True)
        ap.add_argument("--mmproj")
        ap.add_argument("--task", choices=("load", "ctx4k", "audio30", "audio", "image"), required=True)
        ap.add_argument("--budget", type=int, default=70, help="image tokens (task image)")
        ap.add_argument("--ctx", type=int, default=2048)
        ap.add_argument("--ubatch", type=int, default=512)
        ap.add_argument("--lazy", default="off")
        ap.add_argument("--threads", type=int, default=2)
        ap.add_argument("--clips", default="2,10,30")
        child(ap.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    ap.add_argument("--reps", type=int, default=2, help="bench repetitions")
    ap.add_argument(
        "--bench-models",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        default=[],
        help="bench only these (e.g. e2b-Q4_0,e4b-Q4_K_M); the others keep their saved figures",
    )
    ap.add_argument("--render", action="store_true", help="only write the markdown from the saved results")
    args = ap.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.render:
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        missing = [p.name for p in (text_file("e2b", "Q4_0"), mmproj_file("e2b", "Q8_0")) if not p.exists()]
        if missing and not set(sections) <= WITHOUT_MODEL:
            sys.exit(f"missing {', '.join(missing)}: run scripts/make_fullsize_gemma4.py --model e2b (and e4b) first")
        if "bench" in args.sections and not LLAMA_BENCH.exists():
            sys.exit(
                f"llama-bench not found at {LLAMA_BENCH}: build it from the llama-cpp-python sdist, or set LLAMA_BENCH"
            )
        for section in sections:
            if section not in SECTIONS:
                sys.exit(f"unknown section {section}; choose from {', '.join(SECTIONS)}")
            if section == "bench":
                data = bench(args.reps, args.bench_models, results.get("bench", {}).get("data", {}))
            else:
                data = globals()[section]()
            results[section] = _save(section, data)
    if text_file("e2b", "Q4_0").exists():
        repredict(results)
        RESULTS.write_text(json.dumps(results, indent=1))
    DOC.parent.mkdir(exist_ok=True)
    if "listening" in results:
        draw_listening(results["listening"]["data"], DOC.parent / "listening.png")
    DOC.write_text(merge_sections(DOC.read_text() if DOC.exists() else "", render_markdown(results)))
    print(f"wrote {DOC}")
    return 0


def _save(section: str, data: dict) -> dict:
    """Record a section's data (with when and where it was measured) in the results file."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[section] = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu": _cpu(), "data": data}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)  # a section without a model may come first
    RESULTS.write_text(json.dumps(results, indent=1))
    return results[section]


def _cpu() -> str:
    from edge.device.linux import cpu_model, parse_cpuinfo

    return cpu_model(parse_cpuinfo(Path("/proc/cpuinfo").read_text()))


if __name__ == "__main__":
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed for the speech clips: apt-get install espeak-ng")
    raise SystemExit(main())
