"""The embedded inference worker (docs/inference-protocol.md): KV-cached decoding on our own model
code, continuous batching across requests, many LoRA adapters over one copy of the base weights.

    cd trainer && python -m opentune_trainer serve [--max-batch 32] [--memory-gb 4] [--idle-seconds 600]

- kv_cache.py: slot-based per-layer key/value tensors, rows kept compact;
- adapters.py: PEFT adapter folders validated and loaded, applied per row group;
- forward.py: prefill (one prompt) and decode (one token for every row) over the cache;
- sampling.py: greedy / temperature / top_p / penalties / logprobs for a batch of rows;
- engine.py: one loaded set of weights and its running batch;
- server.py: the stdin reader, the scheduler loop and the memory LRU.
"""
