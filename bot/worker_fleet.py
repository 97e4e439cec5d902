"""`atelier worker --all-devices` / `--devices A,B`: one worker process per device, supervised together."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from engine.config import Settings
from engine.remote.placement import parse_device, visible_devices


def devices_of(args: argparse.Namespace) -> list[str]:
    """The devices to start workers on: --devices as given, or every visible GPU for --all-devices."""
    if args.devices:
        names = [d.strip() for d in args.devices.split(",") if d.strip()]
    else:
        names = visible_devices()
        if not names:
            raise ValueError(
                "--all-devices: no CUDA device is visible here (use --device cpu for one CPU worker)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"--devices lists a device twice: {','.join(names)}")
    for name in names:
        parse_device(name)  # a clear error before anything starts
    return names


def child_argv(settings: Settings, args: argparse.Namespace, device: str, index: int) -> list[str]:
    """The `atelier worker` arguments of the worker for one device (its own id and metrics port)."""
    argv = [] if args.config is None else ["--config", args.config]
    argv += ["worker", "--device", device]
    if args.id:
        argv += ["--id", f"{args.id}-{device}"]
    port = settings.metrics.port if args.metrics_port is None else args.metrics_port
    if settings.metrics.enabled or args.metrics_port is not None:
        argv += ["--metrics-port", str(port + index if port else 0)]  # one port each (0 = any)
    if args.max_jobs:
        argv += ["--max-jobs", str(args.max_jobs)]
    for name in args.warm or []:
        argv += ["--warm", name]
    argv += ["--demo"] * bool(args.demo) + ["--diagnostics"] * bool(args.diagnostics)
    return argv


def run_fleet(settings: Settings, args: argparse.Namespace) -> int:
    """Start one worker per device, pass SIGTERM/SIGINT on to all, wait for all; the worst exit code."""
    devices = devices_of(args)
    procs = [  # own process groups: a terminal's Ctrl-C reaches them once, through forward()
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *child_argv(settings, args, d, i)], process_group=0
        )
        for i, d in enumerate(devices)
    ]
    print(f"atelier worker: started {len(procs)} workers on {', '.join(devices)}", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)
