"""What Gemma 4 hears (FACTS.md), written once: every module that cuts, counts or converts audio uses these."""

SAMPLE_RATE = 16_000  # Hz, mono float32 PCM in [-1, 1]
MAX_CLIP_SECONDS = 30.0  # the longest clip the audio encoder was trained on
TOKENS_PER_SECOND = 25  # audio tokens the encoder makes: 30 s = 750
