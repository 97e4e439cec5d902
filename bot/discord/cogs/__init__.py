"""Thin cogs: each parses options, defers, calls a use-case (bot.usecases) or the agent, and renders."""
