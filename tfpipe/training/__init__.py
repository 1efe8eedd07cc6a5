"""Training: a whole fine-tuning run, and pretraining a base from scratch.

    train       train(TrainConfig): a run as a flat list of stages, resumable
    config      TrainConfig, every setting of a run, checked before any work
    finetune    the two-phase schedule, the variables each phase trains, BatchNorm calibration
                (which layers of the base train: models.trainable)
    features    fast feature extraction: the frozen base run once, the head trained on its output
    activations cached fine-tuning: the frozen bottom of the base run once, the top trained on its output
    memory_plan what the run's data may hold in memory: cache, stored features or activations
    resume      checkpoints inside an epoch (--checkpoint_every) and where a resumed run continues
    input_wait  each epoch's wait for input, from the training step's own timestamps
    timeline    where a run's first seconds go, from its launch to its first epoch's end
    callbacks   per-epoch records and checkpoints, the phase clock, early stopping, the NaN stop
    distribute  tf.distribute strategies, and datasets in which no replica gets an empty batch
    pretrain    bin/pretrain: a base trained from scratch, written as a no-top weights file

Imports: data/, models/, runs/, inference/ (the test split's evaluation at a run's end);
nothing imports training/ but cli/ and the package's public names.
"""
