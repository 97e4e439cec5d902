"""Front-neutral use-cases: what a user can ask of Atelier, for every front (Discord, terminal, web).

Each function takes the engine (engine.core.Engine) and plain values, checks them, calls the engine or the store,
and returns data or text; bad input raises UserError with the message to show. Fronts parse, call, render.
"""
