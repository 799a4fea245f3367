"""opentune training worker: Llama-family LoRA / full fine-tuning driven by a job spec.

See docs/trainer-protocol.md for the interface and trainer/README.md for usage.
"""
