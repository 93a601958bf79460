"""LoRA Manager: a self-hosted catalog, prompt composer and generation queue for LoRA adapters."""
