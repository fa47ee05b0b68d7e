"""Load a GGUF (and its projector) into llama.cpp with resolved settings; hand out its engine.

`LoadedModel.complete()` / `.chat()` return a `Generation` (generation.py): iterate it for text
pieces, then read `.stats` (prompt tokens evaluated and reused, prefill and decode tokens/s).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.errors import AudioError, ImageError, ModelFileError
from edge.model.backend import BackendChoice, backend_choice
from edge.model.buffer_overrides import TensorOverrides, overrides_for
from edge.model.chat_format import ChatPrompt, Message, build_chat_prompt
from edge.model.engine.core import Engine
from edge.model.engine.generation import Generation
from edge.model.engine.media import Projector
from edge.model.engine.prefixes import PrefixStore
from edge.model.engine.sampling import GEMMA_SAMPLING, Sampling
from edge.model.gguf import GGUFInfo, check_loadable_model
from edge.model.rpc import DeviceList, remote_devices
from edge.settings import RunSettings
from edge.vision.images import Picture
from edge.workers.loss import mark_in_use
from edge.workers.split import LayerSplit

# llama.cpp enum values (llama.h / ggml.h of the pinned llama-cpp-python).
_LOAD_MODES = {"none": 0, "mmap": 1, "mlock": 2, "mmap+mlock": 3, "direct-io": 4}
_LAZY_MODES = {"off": 0, "auto": 1, "on": 2}
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


@contextlib.contextmanager
def _llama_load_params(
    settings: RunSettings, backend: BackendChoice, overrides: TensorOverrides | None, devices: DeviceList | None
):
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
            if devices is not None:  # RPC workers: the only devices layers are offloaded to
                params.devices = devices.address
            super().__init__(path_model=path_model, params=params, verbose=verbose)

    llama_module.internals.LlamaModel = _WithLoadModes
    try:
        yield
    finally:
        llama_module.internals.LlamaModel = original


def _file_identity(path: Path) -> dict:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class LoadedModel:
    """One GGUF loaded into llama.cpp with one set of settings, its engine and (maybe) its projector."""

    def __init__(
        self,
        path: str | Path,
        settings: RunSettings,
        *,
        verbose: bool = False,
        info: GGUFInfo | None = None,
        backend: BackendChoice | None = None,
        split: LayerSplit | None = None,
    ):
        """`info`: the file's already-checked header (launch.prepare_run has one), else it is read here.
        `backend`: which extra CPU kernels to use; by default the machine's verdict (model/backend.py).
        `split`: layers to run on RPC workers (workers/split.py); None: all here.
        """
        self.path = Path(path)
        self.info: GGUFInfo = info or check_loadable_model(self.path)  # before llama.cpp can abort on it
        self.settings = settings
        self.verbose = verbose
        self.backend = backend or backend_choice()
        self.split = split
        started = time.perf_counter()
        self.llama = self._load(verbose, self.info.usable_ctx(settings.n_ctx))
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = self.llama.n_ctx()  # what llama.cpp allocated (it may pad the request)
        self.engine = Engine(self.llama, n_batch=self.llama.n_batch)

    def _load(self, verbose: bool, n_ctx: int):
        import llama_cpp

        s = self.settings
        split = self.split if self.split is not None and self.split.remote_layers else None
        overrides = overrides_for(self.backend, self.info.tensors, keep_output_here=split is not None)
        devices = None
        if split:
            devices = DeviceList([remote_devices(w.endpoint)[0] for w in split.workers])
            mark_in_use([w.endpoint for w in split.workers])  # named by the crash guard if one is lost
        try:
            with _llama_load_params(s, self.backend, overrides, devices):
                return llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=s.n_batch,
                    n_ubatch=s.n_ubatch,
                    n_threads=s.n_threads,
                    n_threads_batch=s.n_threads_batch,
                    n_gpu_layers=split.n_gpu_layers if split else s.n_gpu_layers,
                    tensor_split=split.tensor_split if split else None,
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

    def keep_prefixes(self, folder: Path | None, *, on_note: Callable[[str], None] = lambda message: None) -> None:
        """Keep the state of long shared prompt prefixes (a chat's system turn and tool declarations),
        in memory and in `folder` (None: memory only), so they are put back, not evaluated again: after
        another request used the cache, and after a restart (engine/prefixes.py). Call after the
        projector is attached: the projector is part of what a saved state must match."""
        import llama_cpp

        s = self.settings
        identity = {
            "format": 1,
            "model": _file_identity(self.path),
            "projector": _file_identity(self.projector.path) if self.projector is not None else None,
            "cache": {
                "n_ctx": self.n_ctx,
                "n_batch": self.llama.n_batch,
                "n_ubatch": s.n_ubatch,
                "type_k": s.type_k,
                "type_v": s.type_v,
                "flash_attn": s.flash_attn,
                "n_gpu_layers": s.n_gpu_layers,
                "workers": [[w.endpoint, c] for w, c in zip(self.split.workers, self.split.counts, strict=True)]
                if self.split
                else [],
            },
            "llama_cpp": llama_cpp.__version__,
            "system": llama_cpp.llama_print_system_info().decode(errors="replace"),
            "extra_buffers": self.backend.use_extra_bufts,
        }
        self.engine.prefixes = PrefixStore(identity, folder, on_note=on_note)

    # -- the projector ----------------------------------------------------------------------------

    def attach_projector(self, path: str | Path, *, use_gpu: bool = False) -> Projector:
        """Open the mmproj that gives this model ears (and eyes). Only Gemma 4 E2B/E4B take one."""
        if self.info.architecture != "gemma4":
            raise AudioError(
                f"{self.path.name} is a {self.info.architecture} model and takes no projector; "
                "Gemma 4 E2B/E4B hear and see: run `edge-gemma setup` or pass --model PATH"
            )
        projector = Projector(
            self.model_handle,
            path,
            n_threads=self.settings.n_threads_batch,
            use_gpu=use_gpu,
            flash_attn_type=self.llama.context_params.flash_attn_type,
            verbose=self.verbose,
            lifetime=self.engine.lifetime,
        )
        if self.engine.projector is not None:
            self.engine.projector.close()
        self.engine.projector = projector
        return projector

    @property
    def projector(self) -> Projector | None:
        return self.engine.projector

    def fit_image(self, picture: Picture, tokens: int | None = None) -> Picture:
        """A picture sized to `tokens` image tokens (default: the settings' budget), ready for a prompt."""
        if self.projector is None:
            raise ImageError(
                f"{self.path.name} was loaded without a projector, so it cannot see: Gemma 4 E2B/E4B see "
                "through their mmproj (edge-gemma setup installs it, or pass --mmproj PATH)"
            )
        return self.projector.fit_image(picture, tokens or self.settings.image_tokens)

    # -- requests --------------------------------------------------------------------------------

    def complete(self, prompt: str, sampling: Sampling = GEMMA_SAMPLING, **kwargs) -> Generation:
        """Raw text completion of `prompt`. A prompt the context cannot hold is refused before any work."""
        self.engine.check_room(self.count_tokens(prompt))
        return Generation(self.engine, prompt, sampling, **kwargs)

    def chat(
        self, messages: list[Message], sampling: Sampling = GEMMA_SAMPLING, *, tools: list[dict] | None = None, **kwargs
    ) -> Generation:
        """A reply to `messages`, formatted with the model's chat format (chat_format.py); the format's
        end-of-turn strings are added to the sampling's stop strings. `tools`: declarations the
        template renders (tool_turn.py drives calls)."""
        prompt = self.chat_prompt(messages, tools=tools)
        sampling = sampling.with_(stop=tuple(sampling.stop) + tuple(prompt.stop))
        return Generation(self.engine, prompt.text, sampling, pin_chars=prompt.system_end, **kwargs)

    def continue_turn(
        self, text: str, sampling: Sampling = GEMMA_SAMPLING, *, media: Sequence = (), **kwargs
    ) -> Generation:
        """Go on after what the cache holds: `text` (and `media`, one per marker in it) is evaluated
        when the generation starts, nothing before it again; e.g. a tool's results in the same turn."""
        return Generation(self.engine, text, sampling, clips=media, continues=True, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the context (with the BOS llama.cpp adds)."""
        return len(self.engine.tokenize(text, bos=True))

    def count_chat_tokens(self, messages: list[Message]) -> int:
        """Tokens a chat prompt of `messages` takes, rendered as `chat()` renders it."""
        return self.count_tokens(self.chat_prompt(messages).text)

    def chat_prompt(self, messages: list[Message], *, tools: list[dict] | None = None) -> ChatPrompt:
        return build_chat_prompt(
            self.info,
            messages,
            bos_text=self.engine.token_text(self.llama.token_bos()),
            eos_text=self.engine.token_text(self.llama.token_eos()),
            tools=tools,
        )

    # -- for code that drives llama.cpp's C API itself (bench: engine.lent_context) ---------------

    @property
    def model_handle(self):
        """The llama_model pointer."""
        return self.llama.model

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

    def close(self) -> None:
        """Stop every job on this model (each ends at its next token or batch), wait for them however
        long they take, then free: the projector before the model it was opened for. Kept prompt
        states still being written to disk are finished first."""
        if self.engine.prefixes is not None:
            self.engine.prefixes.finish_saving()
        self.engine.lifetime.close(self._free)

    def _free(self) -> None:
        self.engine.free()
        self.llama.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
