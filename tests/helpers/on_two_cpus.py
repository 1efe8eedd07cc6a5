"""Runs a bin/ tool with this process's CPU split into two logical devices, and its
--strategy=mirrored mirrored over both (MirroredStrategy on a machine without GPUs takes CPU:0
alone), so that a command line a user runs on several GPUs runs here on two replicas.

Usage: python on_two_cpus.py BIN_TOOL ARGS..."""

import runpy
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tfpipe.training import distribute  # noqa: E402

make_strategy = distribute.make_strategy


def on_both_cpus(name, devices=None):
    return make_strategy(name, devices or (["/cpu:0", "/cpu:1"] if name == "mirrored" else None))


distribute.make_strategy = on_both_cpus
tool = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(tool, run_name="__main__")
