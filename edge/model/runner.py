"""llama.cpp through llama-cpp-python: load a GGUF with resolved settings and stream text.

`LoadedModel.complete()` / `.chat()` return a `Generation`: iterate it for text pieces, then read
`.stats` (prompt and generation tokens/s from llama.cpp's own performance counters, the numbers
`ollama run --verbose` prints).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ContextFullError, GenerationError, ModelFileError
from edge.model.backend import BackendChoice, backend_choice
from edge.model.buffer_overrides import TensorOverrides, overrides_for
from edge.model.chat_format import ChatPrompt, Message, build_chat_prompt
from edge.model.gguf import GGUFInfo, check_loadable_model
from edge.settings import RunSettings

# llama.cpp enum values (llama.h / ggml.h of the pinned llama-cpp-python).
_LOAD_MODES = {"none": 0, "mmap": 1, "mlock": 2, "mmap+mlock": 3, "direct-io": 4}
_LAZY_MODES = {"off": 0, "auto": 1, "on": 2}
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    prompt_seconds: float
    generated_tokens: int
    generation_seconds: float
    time_to_first_token: float  # wall clock, from the call to the first text piece
    total_seconds: float  # wall clock, including sampling and Python
    stopped_by_user: bool = False

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


class Generation:
    """Iterate for text pieces; `.stats` is set once the iteration ends (or is interrupted)."""

    def __init__(self, model: LoadedModel, pieces: Iterator[str]):
        self._model, self._pieces = model, pieces
        self.stats: GenerationStats | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        start, first = time.perf_counter(), None
        self._model.reset_counters()
        stopped = False
        try:
            for piece in self._pieces:
                first = first if first is not None else time.perf_counter()
                self.text += piece
                yield piece
        except KeyboardInterrupt:
            stopped = True
            raise
        finally:
            end = time.perf_counter()
            self.stats = self._model.read_counters(ttft=(first or end) - start, total=end - start, stopped=stopped)

    def run(self) -> str:
        """Consume the whole generation silently and return the text."""
        for _ in self:
            pass
        return self.text


@contextlib.contextmanager
def _llama_load_params(settings: RunSettings, backend: BackendChoice, overrides: TensorOverrides | None):
    """Set the model params llama_cpp.Llama does not expose, for one model load.

    Llama() maps only use_mmap/use_mlock onto load_mode and has no say over the CPU's extra buffer
    types, so the model-params struct is adjusted just before llama_model_load_from_file sees it;
    the original class is restored afterwards.
    """
    import llama_cpp.llama as llama_module

    original = llama_module.internals.LlamaModel

    class _WithLoadModes(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, path_model, params, verbose=True):
            params.load_mode = _LOAD_MODES[settings.load_mode]
            params.lazy_mode = _LAZY_MODES[settings.lazy_mode]
            params.use_extra_bufts = backend.use_extra_bufts
            params.tensor_buft_overrides = overrides.address if overrides else None
            super().__init__(path_model=path_model, params=params, verbose=verbose)

    llama_module.internals.LlamaModel = _WithLoadModes
    try:
        yield
    finally:
        llama_module.internals.LlamaModel = original


class LoadedModel:
    """One GGUF loaded into llama.cpp with one set of settings."""

    def __init__(
        self,
        path: str | Path,
        settings: RunSettings,
        *,
        verbose: bool = False,
        info: GGUFInfo | None = None,
        backend: BackendChoice | None = None,
    ):
        """`info`: the file's already-checked header (launch.prepare_run has one), else it is read here.
        `backend`: which extra CPU kernels to use; by default the machine's verdict (model/backend.py).
        """
        self.path = Path(path)
        self.info: GGUFInfo = info or check_loadable_model(self.path)  # before llama.cpp can abort on it
        self.settings = settings
        self.backend = backend or backend_choice()
        n_ctx_train = int(self.info.arch_value("context_length", 0) or 0)
        self.n_ctx = min(settings.n_ctx, n_ctx_train) if n_ctx_train else settings.n_ctx
        started = time.perf_counter()
        self.llama = self._load(verbose)
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = self.llama.n_ctx()  # what llama.cpp allocated (it may pad the request)

    def _load(self, verbose: bool):
        import llama_cpp

        s = self.settings
        overrides = overrides_for(self.backend, self.info.tensors)
        try:
            with _llama_load_params(s, self.backend, overrides):
                return llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self.n_ctx,
                    n_batch=s.n_batch,
                    n_ubatch=s.n_ubatch,
                    n_threads=s.n_threads,
                    n_threads_batch=s.n_threads_batch,
                    n_gpu_layers=s.n_gpu_layers,
                    flash_attn=s.flash_attn,
                    type_k=GGML_TYPES[s.type_k],
                    type_v=GGML_TYPES[s.type_v],
                    use_mmap=s.load_mode.startswith("mmap"),
                    use_mlock="mlock" in s.load_mode,
                    # Sliding-window layers keep only the window (+ a ubatch), as llama-server does:
                    # a full-size SWA cache would cost Gemma 4 E4B ~2 GiB at 128K instead of ~0.1.
                    swa_full=False,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(
                f"llama.cpp could not load {self.path} ({exc}): the file may be damaged or "
                "need a newer llama.cpp; download it again (edge-gemma setup)"
            ) from exc

    # -- performance counters -------------------------------------------------------------------

    def reset_counters(self) -> None:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(self.context_handle)

    def read_counters(self, *, ttft: float, total: float, stopped: bool) -> GenerationStats:
        import llama_cpp

        perf = llama_cpp.llama_perf_context(self.context_handle)
        return GenerationStats(
            prompt_tokens=perf.n_p_eval,
            prompt_seconds=perf.t_p_eval_ms / 1000,
            generated_tokens=perf.n_eval,
            generation_seconds=perf.t_eval_ms / 1000,
            time_to_first_token=ttft,
            total_seconds=total,
            stopped_by_user=stopped,
        )

    # -- generation -----------------------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.7,
        stop: list[str] | None = None,
        seed: int | None = None,
        top_p: float = 0.95,
    ) -> Generation:
        """Raw text completion of `prompt`. A prompt the context cannot hold is refused before any work."""
        used = self.count_tokens(prompt)
        if used + 1 > self.n_ctx:
            raise ContextFullError(
                f"the prompt is {used} tokens but the context holds {self.n_ctx}: "
                f"raise --ctx (to at least {used + max_tokens}) or shorten the prompt"
            )
        return Generation(self, self._stream(prompt, max_tokens, temperature, stop or [], seed, top_p))

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the context (with the BOS llama.cpp adds)."""
        return len(self.llama.tokenize(text.encode(), add_bos=True, special=True))

    def count_chat_tokens(self, messages: list[Message]) -> int:
        """Tokens a chat prompt of `messages` takes, rendered as `chat()` renders it."""
        return self.count_tokens(self.chat_prompt(messages).text)

    def chat_prompt(self, messages: list[Message]) -> ChatPrompt:
        return build_chat_prompt(
            self.info,
            messages,
            bos_text=self._token_text(self.llama.token_bos()),
            eos_text=self._token_text(self.llama.token_eos()),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.7,
        seed: int | None = None,
        top_p: float = 0.95,
        stop: list[str] | None = None,
    ) -> Generation:
        """A reply to `messages`, formatted with the model's chat format (see chat_format.py).

        `stop`: strings that end the reply besides the format's own end of turn."""
        prompt = self.chat_prompt(messages)
        stops = prompt.stop + list(stop or [])
        return Generation(self, self._stream(prompt.text, max_tokens, temperature, stops, seed, top_p))

    def _stream(
        self, prompt: str, max_tokens: int, temperature: float, stop: list[str], seed: int | None, top_p: float
    ) -> Iterator[str]:
        if seed is not None:
            self.llama.set_seed(seed)
        try:
            chunks = self.llama.create_completion(
                prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, stream=True
            )
            for chunk in chunks:
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        except (ValueError, RuntimeError) as exc:
            # llama-cpp-python raises these for a full context and a failed llama_decode.
            raise GenerationError(
                f"llama.cpp failed while generating ({exc}); if the context is full, "
                "raise --ctx or start a new conversation"
            ) from exc

    # -- handles for code that drives llama.cpp's C API itself (bench, mtmd) -------------------------

    @property
    def model_handle(self):
        """The llama_model pointer."""
        return self.llama.model

    @property
    def context_handle(self):
        """The llama_context pointer of this model's own context."""
        return self.llama.ctx

    @property
    def context_params(self):
        """The llama_context_params this context was made with (copy before changing)."""
        return self.llama.context_params

    def describe(self) -> tuple[str, int, int]:
        """(llama.cpp's model description, file bytes of the weights, parameter count), as llama-bench."""
        import ctypes

        import llama_cpp

        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model_handle, buf, len(buf))
        return (
            buf.value.decode(errors="replace"),
            llama_cpp.llama_model_size(self.model_handle),
            llama_cpp.llama_model_n_params(self.model_handle),
        )

    def restore(self) -> None:
        """Back to a fresh state after C-API use: own thread counts, an empty KV cache, no cached prompt."""
        import llama_cpp

        ctx = self.context_handle
        llama_cpp.llama_set_n_threads(ctx, self.settings.n_threads, self.settings.n_threads_batch)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        self.llama.reset()  # the high-level Llama would otherwise reuse a "cached" prefix

    def eval_tokens(self, tokens: list[int]) -> None:
        """Evaluate token ids into the KV cache after what is there (a prompt batch or one decode step)."""
        self.llama.eval(tokens)

    def close(self) -> None:
        self.llama.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
