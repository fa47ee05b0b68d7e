"""Other boards' memory through llama.cpp's RPC backend: the worker, finding and checking workers, the layer split."""
