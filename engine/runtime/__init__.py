"""The model runtime: arbiter, diffusion, LLM, control, batching and the local renderer."""
