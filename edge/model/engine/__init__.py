"""The engine: the only code that loads a llama model and changes a llama context's state.

loading.py (LoadedModel: model + projector + engine), core.py (Engine: prefix reuse, media,
sampling, detokenizing), media.py (the projector through libmtmd), sampling.py (Sampling, Grammar),
text.py (streamed detokenizing and stop strings), generation.py (one timed request), listening.py
(a clip encoded while it is spoken), lifetime.py (the model freed only once no job runs on it),
cache_record.py (what each cached position holds).

Code outside this package uses only what this file exports.
"""

from edge.model.engine.core import AUDIO_BATCH, Engine, GenerationStats, PrefillReport
from edge.model.engine.generation import Generation
from edge.model.engine.lifetime import ModelClosedError
from edge.model.engine.listening import Listener, ListenerWork
from edge.model.engine.loading import LoadedModel
from edge.model.engine.media import EncodedAudio, Projector, check_pcm
from edge.model.engine.sampling import GEMMA_SAMPLING, GREEDY, Grammar, Sampling

__all__ = [
    "AUDIO_BATCH",
    "GEMMA_SAMPLING",
    "GREEDY",
    "EncodedAudio",
    "Engine",
    "Generation",
    "GenerationStats",
    "Grammar",
    "Listener",
    "ListenerWork",
    "LoadedModel",
    "ModelClosedError",
    "PrefillReport",
    "Projector",
    "Sampling",
    "check_pcm",
]
