"""Thin cogs: each parses options, defers, calls ops/bridge/agent and renders."""
