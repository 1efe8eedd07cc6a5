"""Measuring: the input pipeline against the tutorial's, epoch by epoch, and memory; how fast
a model predicts.

    pipelines   bench_input's comparison (cold and warm epochs, start-up, peak RSS, reshuffling)
    prediction  bench_predict's throughput and latency, for a Keras or an exported model
    stages      bench_input's stages alone (read, decode, cache, augmentation, the model's step)
                and the verdict naming what bounds training
    tutorial    the transfer-learning tutorial's recipe, which bench_train races tfpipe against

Imports: data/, models/, inference/; never training/ or runs/.
"""
