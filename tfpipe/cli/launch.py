"""Process set-up shared by the bin/ tools."""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import sys

# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def limit_malloc_arenas() -> None:
    """Caps glibc malloc at one arena per core, and at least two.

    glibc's default of 8 arenas per core lets every tf.data thread keep its own
    pool of freed decode buffers, which raised the peak memory of a cached epoch
    at no gain in speed (BUILD_NOTES.md, "Malloc arenas"). The cap applies to
    arenas created from now on, so it must come before the first tf.data
    pipeline runs; a process-wide setting, it belongs to the tools, not to the
    library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, max(os.cpu_count() or 1, 2))
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


# What the bin/ tools keep from Keras' import (a None in sys.modules fails an import): Keras
# imports pyplot at its own import, for plotting helpers the tools never call (in a tool's
# process its image galleries say that matplotlib is missing): 0.35-0.45 s alone, about 0.3 s
# of a tool's start (BUILD_NOTES.md, "Where a run's first seconds go"). tfpipe's own pictures
# import matplotlib when they draw (inference.report).
KEPT_FROM_KERAS = "matplotlib.pyplot"


def give_back_kept_module() -> None:
    """Lets the module the bin/ tools kept from Keras' import be imported again, once Keras is in."""
    if KEPT_FROM_KERAS in sys.modules and sys.modules[KEPT_FROM_KERAS] is None:
        del sys.modules[KEPT_FROM_KERAS]


def freeze_imported_objects() -> None:
    """Moves every object the collector tracks now, the imports' above all, out of its sight, then
    turns it on (the bin/ tools turn it off before their imports).

    Importing TensorFlow, Keras and tensorflow-datasets makes about 570,000 tracked objects, nearly
    all of them alive until the process ends. With the collector on, its full passes over them
    took 0.4-1.2 s of a tool's 3 s of imports, and each later full pass about 0.2 s (one
    gc.collect() over them: 0.27-0.33 s); frozen, they are never scanned again (BUILD_NOTES.md,
    "Where a run's first seconds go"). What the imports left as garbage, about 4,000 objects,
    stays: far less than a collection would cost.
    """
    gc.freeze()
    gc.enable()


def launch(module_name: str, started: float | None = None) -> None:
    """Runs `module_name`.main under absl, with the process set up for tfpipe; `started` is the
    Unix time the tool's script began (before its imports), where a run's timeline starts."""
    if started is not None:
        from tfpipe.training import timeline

        timeline.set_launch_time(started)
    try:
        give_back_kept_module()
        module = importlib.import_module(module_name)
    finally:  # the collector back on even where an import failed (a caller may go on)
        freeze_imported_objects()
    limit_malloc_arenas()
    from absl import app, flags

    # --help prints the main module's docstring and flags; ours live in tfpipe.cli.
    sys.modules["__main__"].__doc__ = module.__doc__
    for name in (module_name, *getattr(module, "FLAG_MODULES", ())):
        for flag in flags.FLAGS.get_flags_for_module(name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    app.run(module.main, argv=sys.argv, flags_parser=_parse_flags)


def _parse_flags(argv):
    """absl's parsing, then quieter logs: tfds and TensorFlow log every dataset
    they open at INFO. --verbosity=0 brings them back."""
    from absl import flags, logging

    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:  # an unknown flag or a bad value: one line, as for every other bad input
        print(f"{os.path.basename(argv[0])}: error: {error}; see --help", file=sys.stderr, flush=True)
        sys.exit(2)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    return remaining


def run_job(make_config, job):
    """The body of a tool that writes a --model_dir: flags -> config, then the job with its
    log on stdout; a TfpipeError becomes one line and exit status 2. Returns (config, results)."""
    from tfpipe.cli import errors

    with errors.reported():
        config = make_config()
        print(f"Model directory: {os.path.abspath(config.model_dir)}", flush=True)
        return config, job(config, log=lambda message: print(message, flush=True))
