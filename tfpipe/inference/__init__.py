"""Using a trained model: predictions on image files, the evaluation report, its pictures.

    predict     a run's model (TrainedModel) on image files (bin/predict)
    runtimes    running an exported model: LiteRT, ONNX, SavedModel
    evaluation  the evaluation report of a split: accuracy, per-class scores, confusion matrix
    report      the pictures: training_curves.png, confusion_matrix.png, mistakes.png

Imports: data/ (the training pipeline's own decode and resize), runs/ (what a run wrote),
TensorFlow/Keras; never training/.
"""
