"""A stand-in for the original project's server, for benchmarks/load.py: a minimal Flask app (run as
`python app.py`, Flask's threaded server) answering one request per prediction with the original
architecture (Conv16-Pool-Conv64-Pool-Dense128-Dense64, trained by `digitrecognizer train --preset seed`)
in PyTorch eager mode, and the original's preprocessing (grayscale, resize to 28x28, invert, scale).

    python benchmarks/flask_original.py --weights benchmarks/results/runs/seed/best.pt --port 5001
"""

import argparse
import io

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image

from digitrecognizer.models import create_model

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--weights", required=True)
parser.add_argument("--port", type=int, default=5001)
args = parser.parse_args()

checkpoint = torch.load(args.weights, map_location="cpu", weights_only=False)
model, _ = create_model("seed")
model.load_state_dict(checkpoint["model"])
model.eval()
app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.post("/predict")
def predict():
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("L").resize((28, 28))
    x = np.asarray(image, np.float32) / 255.0
    if x.mean() > 0.5:  # dark ink on light paper: invert to MNIST's white on black
        x = 1.0 - x
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy((x - 0.1307) / 0.3081)[None, None]), 1)[0].numpy()
    return jsonify(digit=int(probs.argmax()), probabilities=probs.tolist())


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=args.port, threaded=True)
