"""The run directory: everything a training run writes to --model_dir and reads back.

    files    the names of what a run writes (results.json, best.keras, ...) and reading them
    state    checkpoints, the epoch history and resume (RunDirectory, RunState, BestWeights)
    lock     one live run per directory (an flock)

Owns the layout and the safety of a run's directory: a run resumes where it stopped, and
two runs never share a directory. Imports: TensorFlow/Keras, tfpipe.atomic, tfpipe.errors,
tfpipe.paths; never data/, models/, training/ or inference/.
"""
