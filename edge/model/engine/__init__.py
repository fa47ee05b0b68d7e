"""The engine: the only code that loads a llama model and changes a llama context's state.

loading.py (LoadedModel: model + projector + engine), core.py (Engine: prefix reuse, media,
sampling, detokenizing), media.py (the projector through libmtmd), sampling.py (Sampling, Grammar),
text.py (streamed detokenizing and stop strings), generation.py (one timed request).
"""

from edge.model.engine.core import Engine, GenerationStats, PrefillReport
from edge.model.engine.generation import Generation
from edge.model.engine.loading import LoadedModel
from edge.model.engine.media import Projector, check_pcm
from edge.model.engine.sampling import GEMMA_SAMPLING, GREEDY, Grammar, Sampling

__all__ = [
    "GEMMA_SAMPLING",
    "GREEDY",
    "Engine",
    "Generation",
    "GenerationStats",
    "Grammar",
    "LoadedModel",
    "PrefillReport",
    "Projector",
    "Sampling",
    "check_pcm",
]
