"""Measuring: the input pipeline against the tutorial's, epoch by epoch, and memory.

    pipelines   bench_input's comparison (cold and warm epochs, start-up, peak RSS, reshuffling)

Imports: data/; never training/ or runs/.
"""
