"""Command-line tools: the only place that defines and reads absl flags."""
