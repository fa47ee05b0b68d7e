"""docs/performance.md from scripts/fullsize_report.py's results: every figure comes from the JSON."""

from __future__ import annotations

from edge.bench.listening_replay import PrefillRates, first_token_s, prefill_needed
from edge.model.engine import AUDIO_BATCH
from edge.voice.loop import LISTEN_EVERY_S

MIB = 2**20
PLAN_LINES_WITHOUT_PROJECTOR = ("projector (mmproj)", "projector compute (approx.)")


def render_markdown(results: dict) -> str:
    parts = [
        "# Performance at full size",
        "",
        "Measured by `scripts/fullsize_report.py` (this page is its output: edit the script, not the page) on",
        "E2B- and E4B-shaped Gemma 4 files from `scripts/make_fullsize_gemma4.py`: every tensor of the",
        "published files at its real shape and type, the real tokenizer, random weights. Speed and memory",
        "depend on shapes and types, not on what the weights say; what the model *answers* is meaningless.",
        "",
        "    python scripts/make_fullsize_gemma4.py --model e2b && python scripts/make_fullsize_gemma4.py --model e4b",
        "    python scripts/fullsize_report.py",
        "",
    ]
    for name, section in (
        ("files", _files),
        ("bandwidth", _bandwidth),
        ("bench", _bench),
        ("audio", _audio),
        ("voice", _voice),
        ("listening", _listening),
        ("listenparams", _listen_params),
        ("vision", _vision),
        ("memory", _memory),
        ("cgroup", _cgroup),
        ("tools", _tools),
        ("schema", _schema),
        ("hacommand", _ha_command),
        ("wake", _wake),
        ("echo", _echo),
        ("boards", _boards),
    ):
        if name in results:
            r = results[name]
            parts += section(r["data"], results) + ["", f"<sub>measured {r['measured']} on {r['cpu']}</sub>", ""]
    return "\n".join(parts).rstrip() + "\n"


_BOARD_ROWS = {
    "e4b-alone": "E4B Q4_0 + F16 projector, this board alone",
    "e4b-worker-ethernet": "E4B Q4_0 + F16 projector, one worker, Ethernet",
    "e4b-worker-wifi": "E4B Q4_0 + F16 projector, one worker, Wi-Fi",
    "e2b-alone": "E2B Q4_0 + F16 projector, this board alone",
    "e2b-worker-ethernet": "E2B Q4_0 + F16 projector, split anyway, Ethernet",
}


def _boards(data: dict, _: dict) -> list[str]:
    if "error" in data:
        return ["## Across boards (llama.cpp RPC)", "", f"Not measured: {data['error']}."]
    memory, links = data["board_memory"], data["links"]
    relay = any(r.get("delay_by_relay") for r in data["rows"].values())
    lines = [
        "## Across boards (llama.cpp RPC)",
        "",
        "`scripts/boards_bench.py`: this board is a Raspberry Pi 5 4GB's device facts in a memory cgroup of "
        f"{memory['pi5-4gb'] / MIB:,.0f} MiB",
        "(its RAM less the OS's share), with the projector (the microphone is here); the worker is `edge-gemma "
        "worker --threads 1`",
        f"in a network namespace and a {memory['pi5-4gb'] / MIB:,.0f} MiB cgroup, joined by a veth pair at "
        f"{links['ethernet'][1]} Mbit/s and {links['ethernet'][0]} ms round trip",
        f"(Ethernet) or {links['wifi'][1]} Mbit/s and {links['wifi'][0]} ms (Wi-Fi)"
        + (
            ": the rate by `tc tbf`, the delay by a relay in the script (this kernel has no netem)."
            if relay
            else " (`tc netem`)."
        ),
        "Both boards share this machine's two cores, so the split rows are a floor for two real boards. 2 threads",
        "here, n_ctx 2048. First token: a 5 s spoken question (encoded here, prefilled across the split) to its",
        "first answer token. Link: bytes over the veth per generated token (both directions).",
        "",
        "| setup | layers on the worker | load s | pp512 tok/s | tg128 tok/s | 5 s question -> first token | "
        "link per token | peak here / worker MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title in _BOARD_ROWS.items():
        r = data["rows"].get(key)
        if r is None:
            continue
        if "refused" in r:
            lines.append(f"| {title} | refused before loading: {r['refused']} | | | | | | |")
            continue
        if "load_s" not in r:
            lines.append(f"| {title} | failed (exit {r['returncode']}): {' '.join(r.get('stderr', []))} | | | | | | |")
            continue
        split = r["plan"]["split"] or "none"
        worker = f" / {r['worker_max_usage'] / MIB:,.0f}" if "worker_max_usage" in r else ""
        link = f"{r['link_bytes_per_token'] / 1024:,.1f} KiB" if r.get("link_bytes_per_token") else "-"
        lines.append(
            f"| {title} | {split} | {r['load_s']:.1f} | {r['pp512_tps']:.1f} | {r['tg128_tps']:.2f} | "
            f"{r['spoken_5s_first_token_s']:.2f} s | {link} | {r['max_usage'] / MIB:,.0f}{worker} |"
        )
    lines += [
        "",
        "Peak memory is the cgroup's high-water mark, page cache of the mapped model file included (the kernel",
        "reclaims those clean pages under the limit).",
    ]
    return lines


def merge_sections(previous: str, fresh: str) -> str:
    """`fresh` (rendered from the results at hand), keeping each section of `previous` that `fresh`
    does not have, in its place: a section measured on another day (its own "measured" line) is not
    lost because its raw results live on another machine. A section new to the page goes after the
    one it follows in `fresh`."""

    def split(doc: str) -> list[tuple[str, str]]:
        blocks, heading, lines = [], "", []
        for line in doc.splitlines():
            if line.startswith("## "):
                blocks.append((heading, "\n".join(lines).strip("\n")))
                heading, lines = line, []
            lines.append(line)
        blocks.append((heading, "\n".join(lines).strip("\n")))
        return blocks

    new = split(fresh)
    head, texts = new[0][1], dict(split(previous)[1:])
    order = list(texts)
    for i, (heading, _) in enumerate(new[1:], start=1):
        if heading not in order:
            anchor = next((h for h, _ in reversed(new[1:i]) if h in order), None)
            order.insert(order.index(anchor) + 1 if anchor else len(order), heading)
    texts.update(dict(new[1:]))
    return "\n\n".join([head, *(texts[h] for h in order)]).rstrip() + "\n"


def _tools(data: dict, _: dict) -> list[str]:
    lines = [
        "## Tools offered: decode against none",
        "",
        "The same prompt and seed (temperature 1), with one tool offered (`tool_choice: auto`: the call",
        'grammar waits for the `<|tool_call>` token) and without. "Same text": every run wrote the same',
        "tokens both ways. Then a call forced from the first token (Home Assistant's 14 intents) against",
        "free text of its length: random weights choose what the grammar refuses on most tokens, each a",
        'pass over the whole vocabulary, so that figure is a floor; "nothing refused" is a grammar that',
        "allows any text, decoded 256 tokens against free text: the check alone (what a trained model's",
        "well-formed call pays). Medians over the seeds (each seed run 3 times on the tiny model); 2 threads.",
        "",
        "| model | tokens | without tools tok/s | tools offered tok/s | ratio | same text |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for model, d in data.items():
        for r in d["offered"]:
            same = "yes" if r["same_text"] else f"no ({r['calls_started']} runs started a call)"
            rates = f"{r['free_tps']:.1f} | {r['offered_tps']:.1f} | {r['ratio']:.3f}"
            lines.append(f"| {model} | {r['tokens']} | {rates} | {same} |")
    lines += [
        "",
        "Drafting (engine/drafting.py) is on: the tokens the grammar dictates are drafted into the batch of the",
        "token before them and kept as far as the sampler draws them. Random weights spell a call's words in",
        'pieces (`ca`, `l`, `l` for `call`), so few of their drafts are kept; "drafting off" is the same call',
        "decoded one token at a time.",
        "",
        "| model | forced call tokens | refused (full passes) | drafted / kept | free tok/s | forced tok/s "
        "| drafting off tok/s | ratio | nothing refused, 256 tokens: ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, d in data.items():
        f = d["forced"]
        lines.append(
            f"| {model} | {f['call_tokens']:.0f} | {f['refusals']:.0f} | {f['drafted']:.0f} / {f['draft_kept']:.0f} "
            f"| {f['free_tps']:.1f} | {f['forced_tps']:.1f} | {f['undrafted_tps']:.1f} | {f['ratio']:.3f} "
            f"| {f['checked_ratio']:.3f} |"
        )
    lines += [
        "",
        "Calls as a trained model writes them (Gemma 4's syntax, the tokenizer's own split): the batches the",
        "drafter forms for the call's tokens under the real grammar (each a drawn token and its draft), timed",
        "at a depth of 1,200 tokens (the 14 intents and the request) against the same tokens one at a",
        "time. Medians of 5.",
        "",
        "| model | call | tokens | batches | one at a time s | drafted s | speed-up |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for model, d in data.items():
        for c in d.get("calls", []):
            call = c["call"].replace("<|tool_call>", "").replace("<tool_call|>", "").replace('<|"|>', "'")
            lines.append(
                f"| {model} | `{call}` | {c['tokens']} | {' '.join(map(str, c['batches']))} "
                f"| {c['single_s']:.3f} | {c['drafted_s']:.3f} | x{c['ratio']:.2f} |"
            )
    return lines


def _schema(data: dict, _: dict) -> list[str]:
    lines = [
        "## Structured output: decode held to a JSON schema",
        "",
        "A reply held to a JSON schema from its first token (`format` on the Ollama API, `response_format`",
        "json_schema on the OpenAI one: a text field of up to 8,000 characters and an integer), against free",
        "decode of the same length at the same seed (temperature 1). Tokens: the length asked for; random",
        "weights may also close the object sooner, and the reply ends there. They draw tokens the grammar",
        "refuses (a quote or a control character inside the text) far more often than a trained model, each",
        "a pass over the whole vocabulary, so the ratio is a floor. Medians over the seeds (each seed run 3",
        "times on the tiny model); 2 threads. Drafting off: the same, the drafter never asked. Inside the text",
        "field it is asked only after a token that may end the text; the few drafts it forms around the",
        "object's syntax random weights mostly refuse (a trained model writes that syntax), and each costs",
        "its row in a batch.",
        "",
        "| model | tokens | free tok/s | held to the schema tok/s | ratio | refused (full passes) "
        "| drafting off tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, d in data.items():
        for r in d["rows"]:
            undrafted = f"{r['undrafted_tps']:.1f}" if "undrafted_tps" in r else "-"
            lines.append(
                f"| {model} | {r['tokens']} | {r['free_tps']:.1f} | {r['schema_tps']:.1f} | {r['ratio']:.3f} "
                f"| {r['refusals']:.0f} | {undrafted} |"
            )
    return lines


def _wake(data: dict, _: dict) -> list[str]:
    specs = list(data["recall"])
    conditions = list(next(iter(data["recall"].values())))
    lines = [
        "## Wake words: microWakeWord and openWakeWord",
        "",
        f"`scripts/wake_words.py`: {data['requests_per_condition']} spoken requests per name and condition",
        f'("<name>, <request>": {", ".join(data["voices"])}), noise mixed at the SNR over the speech (fan:',
        "pink noise; babble: four other sentences; music: chords over a beat). False accepts: "
        f"{data['negative_minutes']:.0f} minutes",
        'of speech without a name (some of it opened as people talk: "Okay then, ...", "Hey look, ..."),',
        "alone and over music (television-like), through every detector. Reply",
        "playing: the assistant's own reply (espeak-ng) through a loudspeaker in a simulated room (echo_bench's),",
        "as loud as the user at the microphone, the name said 4 s into it, heard as the voice loop's wake word",
        "hears it with the echo canceller on (its linear filter, `--barge-in name`). Threshold: the one a",
        "voice loop uses (edge/audio/wake.py THRESHOLDS: chosen by scripts/wake_thresholds.py on requests and",
        "speech other than these), the model's own in brackets. CPU: seconds of processing per second of audio",
        "on one core.",
        "",
        "| wake word | threshold | " + " | ".join(conditions) + " | false accepts / hour | CPU share |",
        "|---|---:|" + "---:|" * (len(conditions) + 2),
    ]
    thresholds = data.get("thresholds", {})
    for spec in specs:
        recall = " | ".join(f"{data['recall'][spec][c] * 100:.0f}%" for c in conditions)
        fa = data["false_accepts"][spec]
        used, own = thresholds.get(spec, (None, None))
        threshold = "-" if used is None else f"{used:.2f}" + ("" if used == own else f" ({own:.2f})")
        lines.append(
            f"| {spec} | {threshold} | {recall} | {fa['per_hour']:.1f} ({fa['count']}) "
            f"| {data['cpu_share'][spec] * 100:.1f}% |"
        )
    picks = []
    for name in sorted({spec.split(":", 1)[1] for spec in specs}):
        mean = {s: sum(data["recall"][s].values()) / len(conditions) for s in specs if s.endswith(f":{name}")}
        fewest = min(data["false_accepts"][s]["per_hour"] for s in mean)
        best = max((s for s in mean if data["false_accepts"][s]["per_hour"] == fewest), key=mean.get)
        picks.append(f"{name}: {best.split(':')[0]} ({', '.join(f'{s} {m * 100:.0f}%' for s, m in mean.items())})")
    lines += [
        "",
        "A bare `--wake-word NAME` takes the engine with the fewest false accepts, then the higher mean recall",
        "over these conditions (edge/audio/wake.py DEFAULT_ENGINES): " + "; ".join(picks) + ".",
    ]
    return lines


def _echo(data: dict, _: dict) -> list[str]:
    n = data["replies"]
    lines = [
        "## Echo: a reply through a loudspeaker, the user interrupting",
        "",
        f"`scripts/echo_bench.py`: {n} replies (espeak-ng) through a simulated room (30 ms away, a 300 ms",
        "reverberant tail as loud as the direct sound, pink noise at -60 dBFS), the user (Piper, seeded: the same",
        'voice every run) saying "Hey Jarvis, stop, what time is it?" at a random point; the microphone\'s gain',
        "keeps its loudest sample",
        "under full scale; in the last rows the echo comes 200 ms later (a sound card's buffering, past the",
        "filter's 128 ms reach: the canceller finds the delay; in the last row it starts from the delay a",
        "session before found, which the voice loop remembers for its devices). Each reply goes through a new",
        "canceller (`--echo-cancel`, the reply as reference), as a session's first reply does (a later reply:",
        "after one without the user in the same room): the wake word hears",
        "Speex's linear filter, the end-pointer the filter and the residual gate after it. ERLE: echo in over echo",
        "out once the filter has learnt the room (the user and the gate's hold after them left out), the filter /",
        "after the gate. Self-interruptions: the end-pointer",
        "(`--vad energy`, or `--vad micro`, the default) or the wake word hears something before the user",
        "speaks: the reply would stop itself. Caught: the end-pointer hears the user while they talk",
        "(`--barge-in voice`), or the wake word does (`--barge-in name`). The gate's settings were chosen",
        "on other rooms (another seed) than these; CPU: the filter, the delay estimate and the gate.",
        "",
        "| loudspeaker over the user (echo delay) | canceller | ERLE dB | self (energy) | caught (energy) "
        "| self (micro) | caught (micro) | self (name) | caught (name) | CPU share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, d in data["levels"].items():
        for name in ("with", "without"):
            r = d[name]
            with_ = name == "with"
            erle = f"{d['erle_linear_db']:.1f} / {d['erle_db']:.1f}" if with_ else "-"
            cpu = f"{d['cpu_share'] * 100:.1f}%" if with_ else "-"
            counts = " | ".join(
                f"{r[k]}/{n}"
                for k in ("self_energy", "caught_energy", "self_micro", "caught_micro", "self_name", "caught_name")
            )
            lines.append(f"| {level} | {name} | {erle} | {counts} | {cpu} |")
    return lines


PI5_DECODE_TPS = 6.44  # E2B Q4_K_M on a Pi 5 8GB, llama-bench tg128 (FACTS.md)
TRANSCRIPT_TOKENS, CALL_TOKENS = 6, 16  # "Turn on the kitchen light." and its call, as Gemma 4 writes them


def _ha_command(data: dict, results: dict) -> list[str]:
    call = _turn_on_call(results)
    call_how = (
        f"in the {len(call['batches'])} batches drafting forms for them ({' '.join(map(str, call['batches']))}: the"
        " Tools section), timed at E2B size there"
        if call
        else "one at a time"
    )
    lines = [
        "## Home Assistant command, end of speech to answer (E2B Q4_0, Q8_0 projector)",
        "",
        f'"Turn on the kitchen light" ({data["speech_s"]:.1f} s, espeak-ng) through `edge-gemma wyoming` as Home',
        "Assistant's speech-to-text and conversation agent (14 intents declared, `--home-control always`),",
        "by `scripts/ha_command.py` with the `wyoming` client, the audio streamed in 100 ms chunks at speaking pace",
        "(the server hears it as it arrives: `heard while spoken`); stages from the server's `--log`. Random weights",
        f"write no real transcript or call, so the figures take the {TRANSCRIPT_TOKENS}-token transcript at the",
        "transcription's measured decode rate, and the call a real model writes",
        f'(`HassTurnOn{{name:<|"|>kitchen light<|"|>}}` in its markup, {CALL_TOKENS} tokens) {call_how}; prompts',
        "and the audio encoder are measured as they ran. *Transcript*: end of speech to the transcript, where",
        'Home Assistant, with its "prefer handling commands locally" option on, matches this sentence',
        "itself and acts. *Agent*: on to the agent's call, for what it does not match. A Pi 5 on",
        "paper: prefill and encoder time scaled by this machine's prefill rate over the Pi 5's 30 tok/s, a",
        f"token decoded at {PI5_DECODE_TPS} tok/s, the call's batches costing what they cost here against one",
        "token at a time, the protocol's share as here.",
        "",
        "| command | audio tokens | heard while spoken | transcription: encode + prompt s | agent prompt tokens "
        "| of them put back / cached | agent: prompt s | transcript here, s | agent here, s "
        "| transcript, Pi 5 on paper, s | agent, Pi 5 on paper, s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cold = next(c for c in data["commands"] if c["name"] == "cold")
    evaluated = cold["handle"]["prompt_tokens"] - cold["handle"]["prompt_reused"]
    here_prefill = evaluated / cold["handle"]["prompt_seconds"]
    scale = here_prefill / PI5_PREFILL_TPS["e2b"]
    pi5_call = CALL_TOKENS / PI5_DECODE_TPS * (call["drafted_s"] / call["single_s"] if call else 1.0)
    for c in data["commands"]:
        t, h = c["transcribe"], c["handle"]
        decode = t["decode_tps"]
        here_call = call["drafted_s"] if call else CALL_TOKENS / decode
        to_transcript = t["prompt_seconds"] + TRANSCRIPT_TOKENS / decode + (c["transcribe_wall_s"] - t["seconds"])
        agent_extra = h["prompt_seconds"] + (c["handle_wall_s"] - h["seconds"])
        pi5_transcript = (
            t["prompt_seconds"] * scale + TRANSCRIPT_TOKENS / PI5_DECODE_TPS + (c["transcribe_wall_s"] - t["seconds"])
        )
        pi5_agent = pi5_transcript + h["prompt_seconds"] * scale + pi5_call + (c["handle_wall_s"] - h["seconds"])
        label = {"cold": "first, nothing saved", "steady": "next command", "warm": "first after a restart"}[c["name"]]
        lines.append(
            f"| {label} | {t['audio_tokens']} | {t.get('audio_tokens_early', 0)} | {t['prompt_seconds']:.2f} "
            f"| {h['prompt_tokens']} | {h['prompt_reused']} | {h['prompt_seconds']:.2f} | {to_transcript:.2f} "
            f"| {to_transcript + agent_extra + here_call:.2f} | {pi5_transcript:.2f} | {pi5_agent:.2f} |"
        )
    lines += [
        "",
        f"Prefill here {here_prefill:.0f} tok/s (the cold command's agent prompt); decode "
        f"{cold['transcribe']['decode_tps']:.1f} tok/s. Between two commands the transcription uses the KV",
        "cache; the system turn with the declarations is put back from its kept state, not evaluated again.",
    ]
    if call:
        lines.append(
            f"The call: {call['drafted_s']:.2f} s drafted against {call['single_s']:.2f} s one token at a time here;"
            f" {pi5_call:.2f} s against {CALL_TOKENS / PI5_DECODE_TPS:.2f} s on a Pi 5 on paper."
        )
    return lines


def _turn_on_call(results: dict) -> dict | None:
    """The E2B-size timing of "turn on the kitchen light"'s call, from the tools section, if measured."""
    calls = results.get("tools", {}).get("data", {}).get("e2b-Q4_0", {}).get("calls", [])
    return next((c for c in calls if "HassTurnOn{name:" in c["call"]), None)


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f}"


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f}%"


def _files(data: dict, _: dict) -> list[str]:
    out = ["## The files", "", "| file | bytes | published file | difference |", "|---|---:|---:|---:|"]
    for name, f in data.items():
        pub = f["published"]
        diff = _pct(f["bytes"], pub) if pub else "-"
        out.append(f"| {name} | {f['bytes']:,} | {f'{pub:,}' if pub else '-'} | {diff} |")
    return out


def _bandwidth(data: dict, _: dict) -> list[str]:
    out = [
        "## Memory bandwidth (the decode ceiling)",
        "",
        "A STREAM-style probe: numpy copy and triad on 512 MB arrays, best of 5 s, in 1 and 2 processes at once.",
        "",
        "| processes | copy GB/s | triad GB/s |",
        "|---:|---:|---:|",
    ]
    for procs, r in data.items():
        out.append(f"| {procs} | {r['copy_gbs']:.1f} | {r['triad_gbs']:.1f} |")
    return out


def _bench(data: dict, results: dict) -> list[str]:
    bw = results.get("bandwidth", {}).get("data", {})
    out = [
        "## Prefill and decode: `edge-gemma bench` beside llama-bench",
        "",
        "pp512 and tg128 tokens/s (mean ± stdev), the same files, threads, batch 512 and ubatch 512, flash",
        "attention on. Decode reads every weight once per token except the per-layer-embedding table (one",
        "row per layer): decode GB/s = tg tokens/s x those bytes, against the probe's triad figure for as",
        "many processes as threads.",
        "",
        "| model | threads | pp512 edge | pp512 llama-bench | tg128 edge | tg128 llama-bench | decode GB/s "
        "| of triad |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, e in data.items():
        for t in ("1", "2"):
            ours, theirs = e.get("edge", {}), e.get("llama_bench", {})

            def cell(d: dict, test: str, t: str = t) -> str:
                v = d.get(f"{test}-t{t}")
                return (f"{v[0]:.1f} ± {v[1]:.1f}" if v[1] else f"{v[0]:.1f}") if v else d.get("error", "-")

            tg = ours.get(f"tg-t{t}")
            gbs = tg[0] * e["bytes_per_token"] / 1e9 if tg else None
            triad = bw.get(t, {}).get("triad_gbs")
            share = f"{gbs / triad * 100:.0f}%" if gbs and triad else "-"
            out.append(
                f"| {model} | {t} | {cell(ours, 'pp')} | {cell(theirs, 'pp')} | {cell(ours, 'tg')} | "
                f"{cell(theirs, 'tg')} | {f'{gbs:.1f}' if gbs else '-'} | {share} |"
            )
    return out


def _audio(data: dict, _: dict) -> list[str]:
    out = [
        "## Audio: encoder and prefill (E2B Q4_0)",
        "",
        "Real speech (espeak-ng) through libmtmd: the conformer encoder, then the audio tokens (25 per",
        "second) prefilled into the text model. Prefill t/s counts every token the evaluation decoded.",
        "",
        "| projector | clip s | audio tokens | encoder ms | encoder ms per s of speech | prefill t/s "
        "| whole evaluation s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, r in data.items():
        for c in r.get("clips", []):
            out.append(
                f"| {precision} | {c['seconds']:.0f} | {c['audio_tokens']} | {c['encode_ms']:.0f} | "
                f"{c['encode_ms'] / c['seconds']:.0f} | {c['prefill_tps']:.1f} | {c['eval_s']:.2f} |"
            )
        if "clips" not in r:
            out.append(f"| {precision} | failed: {r.get('signal') or r.get('stderr')} | | | | | |")
    return out


def _voice(data: dict, _: dict) -> list[str]:
    turns = data.get("turns", [])
    out = [
        "## Voice turns, stage by stage (E2B Q4_0, Q8_0 projector)",
        "",
        "`scripts/voice_latency.py` on E2B: three spoken questions from a file at speaking pace through the",
        "real `edge-gemma voice` (replies capped at 32 tokens), speech out to PulseAudio. Seconds after the",
        "end of speech. `model_s` is the model's compute (prefill, audio, decoding up to the first clause);",
        "`pipeline_s` is everything else in the wait for the first audible sound. Only the first turn is a",
        "clean measurement: random weights write the longest transcript they may after every reply, so a",
        "later turn waits for that step on the model's thread (reply_start) and prefills a long history",
        "(prompt_ready -> audio_eval_start). A real model's transcript is the question's few words.",
        "",
        "| stage | " + " | ".join(f"turn {i + 1}" for i in range(len(turns))) + " |",
        "|---|" + "---:|" * len(turns),
    ]
    stages = list(turns[0]["timeline"]) if turns else []
    for stage in [*stages, "model_s", "pipeline_s"]:
        cells = [t[stage] if stage in ("model_s", "pipeline_s") else t["timeline"].get(stage) for t in turns]
        out.append(f"| {stage} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    written = " | ".join(str(t["transcript_chars"]) for t in turns)
    out.append(f"| transcript written after the turn (chars) | {written} |")
    return out


def _plan_total(predicted: dict, *, with_projector: bool = True) -> int:
    return sum(v for k, v in predicted.items() if with_projector or k not in PLAN_LINES_WITHOUT_PROJECTOR)


def _memory(data: dict, _: dict) -> list[str]:
    out = [
        "## Memory: peak RSS against the plan",
        "",
        "Each case in a fresh process: load (n_ctx 2048), a 4k-context turn (a 4,032-token prompt and 16",
        "decoded tokens at n_ctx 4096), a 30 s audio turn (Q8_0 projector). The plan column is",
        "`edge-gemma plan`'s arithmetic (`check_fits`) for the same file and settings, OS headroom left out.",
        "Peak RSS counts file pages as well as anonymous memory. Q4_0 weights are repacked for the CPU's",
        "kernels into anonymous memory, and the file pages they were read from stay counted until the",
        "kernel needs the room; without lazy PLE the whole per-layer table is read at load and counted",
        "too. Those pages are clean, so the kernel can drop them (the cgroup runs below): what must fit",
        "is the anonymous peak (sampled every 20 ms) plus the mapped pages still in use (the token table,",
        "also the output head).",
        "",
        "| case | lazy PLE | plan MiB | peak RSS MiB | RSS vs plan | peak anonymous MiB | anonymous vs plan |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, r in data.items():
        model, quant, task, lazy = case.split("-", 3)
        plan = _plan_total(r["predicted"])
        peak, anon = r.get("peak", {}).get("VmHWM"), r.get("peak_anon")
        failed = r.get("signal") or ("failed" if r.get("returncode") else "-")
        out.append(
            f"| {model} {quant} {task} | {lazy.removeprefix('lazy_')} | {_mib(plan)} | {_mib(peak)} | "
            f"{_pct(peak, plan) if peak else failed} | {_mib(anon)} | {_pct(anon, plan) if anon else '-'} |"
        )
    return out


def _cgroup(data: dict, _: dict) -> list[str]:
    if "error" in data:
        return ["## The boards' plans in a memory cgroup", "", f"Not run: {data['error']}."]
    out = [
        "## The boards' plans in a memory cgroup",
        "",
        "Each small board's plan (its profile's model, first quant, projector, context, ubatch and lazy PLE",
        "setting) runs a load and a turn (a 30 s clip, or a picture at the profile's image-token budget)",
        "alone in a cgroup v1 memory group limited to the",
        "board's RAM less the OS headroom its profile keeps (limit: budget), or to the plan's own figure",
        "for the process (limit: plan). No swap. Page cache for the files is dropped first, so every page",
        "the run reads is charged to it. Max usage includes page cache, which fills any limit; peak anon is",
        "the process's own memory at its peak (what cannot be dropped: no swap); major faults count pages",
        "read again after the kernel dropped them.",
        "",
        "| profile | model file | projector | n_ctx | lazy PLE | turn | limit | limit MiB | plan MiB | max usage MiB | "
        "peak anon MiB | major faults | result |",
        "|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in data.values():
        plan = _plan_total(r["predicted"])
        if r["returncode"] == 0:
            result = f"finished in {r['wall_s']:.0f} s"
        elif r.get("oom_kills") or r.get("signal") == "SIGKILL":
            result = f"killed by the OOM killer after {r['wall_s']:.0f} s"
        else:
            result = f"failed ({r.get('signal') or r['returncode']})"
        out.append(
            f"| {r['profile']} | {r['quant']} | {r['mmproj']} | {r['n_ctx']} | {r['lazy']} | {_turn(r)} | "
            f"{r.get('limit_from', 'budget')} | {_mib(r['limit'])} | "
            f"{_mib(plan)} | {_mib(r['max_usage'])} | {_mib(r.get('peak_anon'))} | {r['pgmajfault']:,} | {result} |"
        )
    return out


def _turn(r: dict) -> str:
    if r.get("turn") == "image":
        return f"picture, {r['image']['image_tokens']} image tokens" if "image" in r else "picture"
    return "30 s audio"


# -- hearing while the user speaks -----------------------------------------------------------------


def _listening(data: dict, results: dict) -> list[str]:
    cases = data["cases"]
    pi5 = data["pi5_prefill_tps"]
    here, pi_rates, encode, pi_encode, source = _listening_costs(data, results)
    out = [
        "## Hearing while the user speaks (E2B Q4_0, F16 projector)",
        "",
        "Questions of 2-20 s arrive at speaking pace at `AudioConversation` (system prompt already in the",
        "cache); the reply starts at the end of speech. *Whole*: the clip is encoded and prefilled when",
        "speech ends. *While spoken*: a step per second of new speech (one at a time, as the voice loop",
        "does) encodes a window of at most 7.7 s + the new audio and prefills its exact rows. `early`: audio",
        "tokens in the cache before the end of speech. `encoded`: audio through the encoder, windows",
        "overlapping (the encoder work repeated). Seconds after the end of speech.",
        "",
        "| question | heard | first token | audio tokens | early | evaluated at the end | encode at the end "
        "| encoded | Pi 5 on paper |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        paper = first_token_s(case["seconds"], early=case["early"], encode_s_per_s=pi_encode, rates=pi_rates)
        out.append(
            f"| {case['seconds']} s | {'while spoken' if case['early'] else 'whole'} | {case['first_token_s']:.2f} s "
            f"| {case['audio_tokens']} | {case['audio_tokens_early']} | {case['evaluated_at_end']} "
            f"| {case['encode_at_end_s']:.2f} s | {case['encoded_audio_s']:.0f} s | {paper:.1f} s |"
        )
    replayed = [first_token_s(c["seconds"], early=c["early"], encode_s_per_s=encode, rates=here) for c in cases]
    out += [
        "",
        f"Pi 5 on paper: {source}; a Pi 5 prefills E2B at {pi5:.0f} tok/s (FACTS.md, pp512), so prefill at every",
        "batch size and the encoder are scaled by the same factor (the encoder assumed to slow down as prefill",
        "does) and the same one-step-at-a-time policy is replayed in virtual time (edge/bench/listening_replay.py;",
        "replayed with this machine's own costs it gives "
        + ", ".join(f"{t:.1f}" for t in replayed)
        + " s for the rows above). Decoding after the first token is not in this table.",
        "",
        "![One 5 s question, heard whole and while spoken](listening.png)",
    ]
    return out


def _listening_costs(data: dict, results: dict):
    """(prefill rates here, on a Pi 5, encoder s/s here, on a Pi 5, where they came from) for the replay:
    the listenparams section's batch-by-batch rates when measured, else this section's whole rows."""
    pi5 = data["pi5_prefill_tps"]
    params = results.get("listenparams", {}).get("data")
    if params:
        here = PrefillRates({int(n): r for n, r in params["prefill_tps_by_batch"].items()})
        encode = params["encode_s_per_s"]["F16"]
        source = (
            "prefill rates at each batch size and the F16 encoder's rate from the listening parameters section "
            f"({here.tps(512):.1f} tok/s at 512, {here.tps(AUDIO_BATCH):.1f} at {AUDIO_BATCH}; "
            f"{encode * 1000:.0f} ms per s of speech)"
        )
    else:
        flat = rates_here(data["cases"])
        here, encode = PrefillRates({1: flat["prefill_tps"]}), flat["encode_s_per_s"]
        source = (
            f"this machine prefilled {flat['prefill_tps']:.1f} tok/s and encoded 1 s of speech in "
            f"{encode * 1000:.0f} ms (from the *whole* rows)"
        )
    factor = pi5 / here.tps(512)
    return here, here.scaled(factor), encode, encode / factor, source


LISTEN_STEPS = (0.5, 1.0, 1.5, 2.0)
LISTEN_BATCHES = (12, 24, 48)


def _listen_params(data: dict, _: dict) -> list[str]:
    here = PrefillRates({int(n): r for n, r in data["prefill_tps_by_batch"].items()})
    pi5 = data["pi5_prefill_tps"]
    factor = pi5 / here.tps(512)
    pi_rates = here.scaled(factor)
    rates_line = ", ".join(f"{n}: {r:.1f}" for n, r in sorted(here.by_batch.items()))
    encoders = ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in data["encode_s_per_s"].items())
    lines = [
        "## Listening parameters: step, batch, projector (E2B Q4_0, replayed)",
        "",
        "The listening policy (edge/bench/listening_replay.py) replayed for other settings than the voice",
        f"loop's (a step after every {LISTEN_EVERY_S:g} s of new speech, rows prefilled in batches of {AUDIO_BATCH},",
        "the F16 projector), from costs measured here: prefill tokens/s by batch size at a voice turn's depth",
        f"({rates_line}) and the encoder per second of speech ({encoders}). A Pi 5 on paper: every",
        f"rate scaled by its published pp512 over this machine's ({pi5:.0f} / {here.tps(512):.1f}). End of speech",
        "to first token, seconds.",
        "",
        "| projector | step s | batch | 2 s here | 5 s here | 10 s here | 20 s here | 2 s Pi 5 | 5 s Pi 5 "
        "| 10 s Pi 5 | 20 s Pi 5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    settings = [("F16", step, batch) for step in LISTEN_STEPS for batch in LISTEN_BATCHES]
    settings += [(p, LISTEN_EVERY_S, AUDIO_BATCH) for p in data["encode_s_per_s"] if p != "F16"]
    for projector, step, batch in settings:
        encode = data["encode_s_per_s"][projector]
        cells = []
        for rates, enc in ((here, encode), (pi_rates, encode / factor)):
            for seconds in (2, 5, 10, 20):
                t = first_token_s(seconds, early=True, encode_s_per_s=enc, rates=rates, step_s=step, batch=batch)
                cells.append(f"{t:.2f}")
        now = " (now)" if (projector, step, batch) == ("F16", LISTEN_EVERY_S, AUDIO_BATCH) else ""
        lines.append(f"| {projector}{now} | {step:g} | {batch} | {' | '.join(cells)} |")
    needed = prefill_needed(
        5,
        2.5,
        encode_s_per_s=data["encode_s_per_s"]["F16"] / factor,
        rates=pi_rates,
        step_s=LISTEN_EVERY_S,
        batch=AUDIO_BATCH,
    )
    lines += [
        "",
        f"On a Pi 5 at {pi5:.0f} tok/s a batch of {AUDIO_BATCH} prefills at {pi_rates.tps(AUDIO_BATCH):.1f} tok/s, "
        "while speech brings 25 audio tokens a second: listening falls behind",
        "whatever the step, and the first token of a 5 s question waits for that backlog. Within 2.5 s it",
        f"needs {needed:.2f} times these rates ({pi5 * needed:.0f} tok/s at pp512, the encoder as much faster).",
    ]
    return lines


# Prefill on a Pi 5 (FACTS.md, published llama.cpp figures): E2B Q4 28-32 tok/s, E4B Q4_0 18.5-18.9.
PI5_PREFILL_TPS = {"e2b": 30.0, "e4b": 18.7}


def _vision(data: dict, _: dict) -> list[str]:
    out = [
        "## Pictures: the image-token budget (Q4_0, F16 projector)",
        "",
        "A 640x480 photo (JPEG, decoded as a user's file is) shown at each of Gemma 4's budgets, each budget",
        "in a fresh process after a text warm-up, pi5's settings otherwise (lazy PLE, n_ubatch 128, flash",
        "attention, 2 threads). The picture is sized to the budget before the projector sees it (aspect",
        "kept, 48x48 pixels per image token), so the tokens are at most the budget. `prefill`: the image",
        "tokens and the question around them. `memory`: what the process's anonymous memory grew by",
        "while encoding and prefilling the picture (the vision encoder's compute buffers); `projector`:",
        "what loading the projector added. Pi 5 on paper: the encoder scaled by this machine's E2B prefill",
        "rate over a Pi 5's (FACTS.md), the prefill at the Pi 5's published rate for the model.",
        "",
        "| model | budget | picture | image tokens | vision encode | prefill | total | memory MiB | projector MiB "
        "| Pi 5 on paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rates = {model: _image_prefill_tps(runs) for model, runs in data.items() if runs}
    encoder_scale = rates.get("e2b", PI5_PREFILL_TPS["e2b"]) / PI5_PREFILL_TPS["e2b"]
    for model, runs in data.items():
        for r in runs:
            if "image" not in r:
                out.append(f"| {model.upper()} | - | failed: {r.get('signal') or r.get('stderr')} | | | | | | | |")
                continue
            i = r["image"]
            encode, prefill = i["encode_ms"] / 1000, i["prefill_s"]
            added = r["peak_anon"] - r["anon_before_image"]
            projector = r["after_mmproj"]["VmRSS"] - r["after_load"]["VmRSS"]
            paper = encode * encoder_scale + i["prompt_tokens"] / PI5_PREFILL_TPS[model]
            out.append(
                f"| {model.upper()} | {i['budget']} | {i['size'][0]}x{i['size'][1]} | {i['image_tokens']} "
                f"| {encode:.1f} s | {prefill:.1f} s | {encode + prefill:.1f} s | {_mib(added)} | {_mib(projector)} "
                f"| {paper:.0f} s |"
            )
    here = ", ".join(f"{m.upper()} {t:.1f} tok/s" for m, t in rates.items())
    out += [
        "",
        f"Prefill here with a picture: {here}. The encoder is the same for E2B and E4B (one vision tower);",
        "prefill is the model's. The profiles' budgets follow from the Pi 5 column: 70 on every Pi 5 (an",
        "answer in seconds; memory is not what limits a Pi here, its CPU is), 140 for unknown machines and",
        "the Orin Nano (its projector runs on the CPU), 280 on laptops, 560 where the encoder runs on a large",
        "GPU. `--image-tokens` (ask, serve) or `detail: low` (serve) choose per use.",
    ]
    return out


def _image_prefill_tps(runs: list[dict]) -> float:
    done = [r["image"] for r in runs if "image" in r]
    return sum(i["prompt_tokens"] for i in done) / max(1e-9, sum(i["prefill_s"] for i in done))


def rates_here(cases: list[dict]) -> dict[str, float]:
    """Prefill tok/s and encoder seconds per second of speech, from the longest question heard whole."""
    whole = max((c for c in cases if not c["early"]), key=lambda c: c["seconds"])
    prefill_s = whole["first_token_s"] - whole["reply_start_s"] - whole["encode_at_end_s"]
    return {
        "prefill_tps": whole["evaluated_at_end"] / prefill_s,
        "encode_s_per_s": whole["encode_at_end_s"] / whole["seconds"],
    }
