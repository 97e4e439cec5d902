"""Atelier's engine layer: models, arbiter, jobs and store (never imports bot or tools)."""

from engine import torchvision_fix

torchvision_fix.install()
