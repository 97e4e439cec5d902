"""The whitelisted tools the agent may call, their registry and the orchestrator that runs them."""
