#!/usr/bin/env bash
# The main job on the embedded defaults: the local workspace, the local compute and the sample data set
# shipped in samples/. Trains for one minute, writes the outputs to ./demo-output, predicts one unseen image.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

.venv/bin/modelbuilder train samples/fashion-mnist-mini --time 60s --output demo-output --name FashionDemo
echo
echo "==> Predicting an image the model has never seen (samples/test-images/Sneaker.png):"
.venv/bin/modelbuilder predict demo-output/MLModel.zip samples/test-images/Sneaker.png
