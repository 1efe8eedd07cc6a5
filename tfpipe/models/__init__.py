"""What is trained: pretrained bases, their weights, the classifier around them, and augmentation.

    backbones/  name -> architecture (keras.applications, or EfficientNet-Lite0 built here),
                input scaling, and the reader of PyTorch weight files
    weights     --weights: what a base starts from (the auto rule, packaged ImageNet weights)
    classifier  the Functional classifier and its Model subclass with its own train_step
    augment     Keras preprocessing layers, parsed from --augment, and where they run
    trainable   --fine_tune_at resolved to a layer of the base; freezing and unfreezing it

Imports: Keras, TensorFlow, numpy, tfpipe.errors; never data/, training/, runs/ or
inference/: a model knows nothing of datasets or run directories.
"""
