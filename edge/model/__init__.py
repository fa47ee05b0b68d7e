"""One model in llama.cpp: GGUF checks, the runner, chat format, KV sizes, audio in (mtmd), CPU kernels."""
