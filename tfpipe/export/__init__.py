"""Taking a trained model out of TensorFlow: LiteRT, ONNX or a SavedModel, quantized or not.

    formats   each format and quantization: Keras' own export, the converter's settings,
              ONNX quantization with onnxruntime
    exporter  a run's model -> the file, labels.txt and the JSON record beside it (bin/export_model)

Imports: data/ (the representative images come through the training pipeline), models/
(the graph to export), runs/ (what a run wrote), inference/ (loading the run's model,
running the exported file to check it); never training/, bench/ or cli/.
"""
