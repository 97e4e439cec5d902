"""The Discord front: a thin discord.py layer over the agent and the job services."""
